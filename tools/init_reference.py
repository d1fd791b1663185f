"""Independent reference for kiln's seeded initializers (docs/model-format.md, "Weights").

Implements SplitMix64 and the uniform / Box-Muller normal streams exactly as the format document
states them, and prints the first values that ir/src/init.rs pins in its unit tests.
Run: python3 tools/init_reference.py
"""
import math, struct
M = (1 << 64) - 1
class SM:
    def __init__(self, seed): self.s = seed & M
    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)
    def uniform(self): return (self.next() >> 11) * 2.0**-53
    def normal(self):
        u1 = ((self.next() >> 11) + 1) * 2.0**-53
        u2 = (self.next() >> 11) * 2.0**-53
        return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
def f32(x): return struct.unpack('<f', struct.pack('<f', x))[0]
def fmt(x):
    # Bit pattern of the f32 (what the Rust test pins), then the value for humans.
    return "0x%08X /* %r */" % (struct.unpack('<I', struct.pack('<f', x))[0], f32(x))
r = SM(0); print([hex(r.next()) for _ in range(3)])
print(hex(SM(7).next()))
r = SM(0); print("normal0", [fmt(r.normal()) for _ in range(4)])
r = SM(7); print("normal7", [fmt(1 + 0.5 * r.normal()) for _ in range(3)])
r = SM(0); print("uniform0", [fmt(r.uniform()) for _ in range(4)])
r = SM(3); print("uniform3", [fmt(-2 + 7 * r.uniform()) for _ in range(3)])

# How far each pinned value lies from a point where rounding to f32 would flip (relative). A
# different libm changes ln/cos by about an f64 ulp (1.1e-16 relative), far less than this margin,
# so the bit-exact comparison in ir/src/init.rs does not depend on the platform.
def flip_margin(x):
    f = f32(x)
    bits = struct.unpack('<I', struct.pack('<f', f))[0]
    neighbours = [struct.unpack('<f', struct.pack('<I', b))[0] for b in (bits - 1, bits + 1)]
    return min(abs(x - (f + n) / 2) for n in neighbours) / abs(x)
values = []
r = SM(0); values += [r.normal() for _ in range(4)]
r = SM(7); values += [1 + 0.5 * r.normal() for _ in range(3)]
r = SM(0); values += [r.uniform() for _ in range(4)]
r = SM(3); values += [-2 + 7 * r.uniform() for _ in range(3)]
print("smallest relative distance to an f32 rounding flip: %.1e" % min(flip_margin(v) for v in values))
