//! The Cranelift JIT wrapper: host ISA flags, one module per compiled model, and the uniform
//! kernel ABI.
//!
//! Every generated kernel has the signature `extern "C" fn(args: *const *mut u8, start: i64,
//! end: i64)`: `args` holds the base pointers of its buffers (outputs first, then inputs, each
//! kernel documents its order) and `[start, end)` is the range of rows this call handles, so the
//! executor can split a kernel across threads without the kernel knowing about threads.

use cranelift_codegen::ir::{AbiParam, UserFuncName, types};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

/// A generated kernel: `args` base pointers, rows `[start, end)`.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, start: i64, end: i64);

/// What the code generator may assume about the host.
#[derive(Debug, Clone, Copy)]
pub struct HostFeatures {
    /// `fma` on f32/f32x4 lowers to vfmadd; without it Cranelift would call `fmaf` per lane, so
    /// the generators emit mul + add instead.
    pub fma: bool,
}

impl HostFeatures {
    pub fn detect() -> HostFeatures {
        #[cfg(target_arch = "x86_64")]
        let fma = std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        HostFeatures { fma }
    }
}

/// One JIT module and the kernels defined in it so far.
pub struct Jit {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    pub features: HostFeatures,
    pending: Vec<(FuncId, String)>,
    /// Name and CLIF text of every kernel, in definition order (before Cranelift's optimiser);
    /// the text is empty unless `keep_clif`.
    pub clif: Vec<(String, String)>,
    pub keep_clif: bool,
    /// Print each kernel's machine code to stderr (`CodegenOptions::disasm`).
    pub disasm: bool,
    /// The hand-written map kernels' entry for generated code to call
    /// ([`crate::simd::host_map_entry`]), when the chosen ISA has them; a fused chain with an
    /// exp/tanh/sigmoid/erf/GELU then calls it instead of evaluating that op four lanes at a time.
    pub host_map: Option<crate::simd::HostMapFn>,
}

/// A kernel name and its entry point, valid while the module lives.
pub struct Compiled {
    pub name: String,
    pub func: KernelFn,
}

impl Jit {
    pub fn new(features: HostFeatures) -> Result<Jit, String> {
        let mut flags = settings::builder();
        // `JITBuilder::with_isa` expects is_pic/colocated; see "Facts checked on this machine".
        // opt_level "none": the generators already emit the code they want, loop-invariant values
        // before their loops. Cranelift's e-graph pass ("speed") re-places pure values at their
        // uses and only hoists them out of a loop whose nesting level is deeper than their
        // operands'; a row's mean or 1/σ, computed from the accumulators of the previous loop at
        // the same level, was sunk into the next loop and recomputed per f32x4 (sqrt and division
        // included). Measured (kiln bench --profile, 1 thread): LayerNorm [4096,768] 5.50 → 1.85
        // ms, softmax [256,4096] 3.59 → 2.54 ms, GELU 1M 2.80 → 2.98 ms, meanvc_dit_bench 22.3 →
        // 21.1 ms, prelm_transformer_bench 27.1 → 26.1 ms.
        for (k, v) in [("opt_level", "none"), ("is_pic", "false"), ("use_colocated_libcalls", "false")] {
            flags.set(k, v).map_err(|e| format!("cranelift flag {k}: {e}"))?;
        }
        let isa_builder = cranelift_native::builder().map_err(|e| format!("host not supported by Cranelift: {e}"))?;
        let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| format!("cranelift ISA: {e}"))?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let ctx = module.make_context();
        Ok(Jit {
            module,
            ctx,
            fctx: FunctionBuilderContext::new(),
            features,
            pending: Vec::new(),
            clif: Vec::new(),
            keep_clif: false,
            disasm: false,
            host_map: None,
        })
    }

    pub fn target_config(&self) -> TargetFrontendConfig {
        self.module.target_config()
    }

    /// Defines one kernel. `body` receives the builder positioned in the entry block and the three
    /// ABI parameters (args, start, end); it must end every block it creates (the entry block
    /// included) with a terminator and seal them.
    #[allow(clippy::type_complexity)]
    pub fn define(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut FunctionBuilder, [ir::Value; 3], HostFeatures),
    ) -> Result<(), String> {
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let symbol = format!("{name}_{}", self.pending.len() + self.clif.len());
        let id = self.module.declare_function(&symbol, Linkage::Local, &sig).map_err(|e| format!("{name}: {e}"))?;
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        let config = self.target_config();
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry);
            let params = [p[0], p[1], p[2]];
            body(&mut b, params, self.features);
            b.seal_all_blocks();
            b.finalize(config);
        }
        let text = if self.keep_clif { self.ctx.func.display().to_string() } else { String::new() };
        self.ctx.set_disasm(self.disasm);
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| format!("cranelift failed on kernel {name}: {e:?}"))?;
        if let Some(v) = self.ctx.compiled_code().and_then(|c| c.vcode.clone()) {
            eprintln!("=== {name}\n{v}");
        }
        self.module.clear_context(&mut self.ctx);
        self.pending.push((id, name.to_string()));
        self.clif.push((name.to_string(), text));
        Ok(())
    }

    /// Links every kernel defined so far and returns their entry points in definition order.
    pub fn finish(mut self) -> Result<(Vec<Compiled>, CodeMemory), String> {
        self.module.finalize_definitions().map_err(|e| format!("cranelift finalize: {e}"))?;
        let mut out = Vec::with_capacity(self.pending.len());
        for (id, name) in self.pending.drain(..) {
            let ptr = self.module.get_finalized_function(id);
            // SAFETY: every function in this module was declared with the KernelFn signature
            // (three i64 parameters, no return, host calling convention) by `define`.
            let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
            out.push(Compiled { name, func });
        }
        Ok((out, CodeMemory { module: Some(std::sync::Mutex::new(self.module)) }))
    }
}

/// Owns the executable memory of a finished module and releases it on drop
/// (dropping a `JITModule` leaks its code on purpose).
pub struct CodeMemory {
    // JITModule is Send but not Sync (a RefCell inside); the Mutex makes the holder Sync. It is
    // only touched on drop.
    module: Option<std::sync::Mutex<JITModule>>,
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            let module = m.into_inner().unwrap_or_else(|poison| poison.into_inner());
            // SAFETY: CodeMemory is dropped only together with (after) every KernelFn taken from
            // this module: both live in the same Executable, whose fields are dropped after any
            // run() borrowing it has returned.
            unsafe { module.free_memory() };
        }
    }
}
