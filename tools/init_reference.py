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
def fmt(x): return repr(f32(x))
r = SM(0); print([hex(r.next()) for _ in range(3)])
print(hex(SM(7).next()))
r = SM(0); print("normal0", [fmt(r.normal()) for _ in range(4)])
r = SM(7); print("normal7", [fmt(1 + 0.5 * r.normal()) for _ in range(3)])
r = SM(0); print("uniform0", [fmt(r.uniform()) for _ in range(4)])
r = SM(3); print("uniform3", [fmt(-2 + 7 * r.uniform()) for _ in range(3)])
