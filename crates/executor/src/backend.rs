//! Backend selection at run time. The executor is generic; this module names the concrete
//! backends compiled in (CPU always, `wgpu` and `cuda` by cargo feature) and dispatches to one.

use cola_model::LayerOps;

/// The CPU backend: burn's flex (pure Rust gemm kernels, rayon threads).
pub type Cpu = burn_flex::Flex;

#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// A backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

cola_names::by_name!(BackendKind, "backend");

/// Written as its name (`"cpu"`), as run configs have always recorded it.
impl serde::Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Work to run on whichever backend is selected (a generic closure, spelled as a trait).
pub trait WithBackend {
    type Output;
    fn run<B: LayerOps>(self, device: B::Device) -> Self::Output;
}

/// Why [`dispatch`] could not run the work.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("this binary was built without the `{0}` backend; rebuild with `--features {0}`")]
    NotBuilt(BackendKind),
    #[error("no usable {backend} device: {message}")]
    NoDevice { backend: BackendKind, message: String },
}

/// Runs `work` on the backend `kind`, or says why it cannot (not compiled in, or no usable
/// device: the GPU runtimes panic when they find none, so a first tiny operation is tried under
/// `catch_unwind` and its panic turned into an error).
pub fn dispatch<W: WithBackend>(kind: BackendKind, work: W) -> Result<W::Output, BackendError> {
    if !kind.compiled_in() {
        return Err(BackendError::NotBuilt(kind));
    }
    match kind {
        BackendKind::Cpu => Ok(work.run::<Cpu>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            probe::<Wgpu>(kind)?;
            Ok(work.run::<Wgpu>(Default::default()))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            probe::<Cuda>(kind)?;
            Ok(work.run::<Cuda>(Default::default()))
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("compiled_in checked above"),
    }
}

/// Creates and reads back a one-element tensor on the default device of `B`.
#[allow(dead_code)]
fn probe<B: LayerOps>(kind: BackendKind) -> Result<(), BackendError> {
    let result = std::panic::catch_unwind(|| {
        let device = B::Device::default();
        let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0f32], &device);
        t.into_data().into_vec::<f32>().map(|v| v[0])
    });
    match result {
        Ok(Ok(1.0)) => Ok(()),
        Ok(other) => Err(BackendError::NoDevice {
            backend: kind,
            message: format!("it returned {other:?} for a one-element test tensor"),
        }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            Err(BackendError::NoDevice { backend: kind, message: msg })
        }
    }
}
