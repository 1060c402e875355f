//! Writes GGUF files byte by byte, for tests and fixtures.

/// A minimal GGUF writer (the format written independently of the reader), for tests and
/// fixtures: small files whose every section boundary is known.
#[derive(Default)]
pub struct GgufBuilder {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    n_tensors: u64,
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder::default()
    }
    fn str_bytes(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        Self::str_bytes(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        Self::str_bytes(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        Self::str_bytes(&mut self.kv, v);
        self.n_kv += 1;
        self
    }
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> &mut Self {
        Self::str_bytes(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        self.n_tensors += 1;
        self
    }
    /// Where each section of [`Self::build`]'s file ends: header, metadata, tensor infos (then
    /// padding), tensor data.
    pub fn section_ends(&self) -> [(&'static str, usize); 4] {
        let header = 24;
        let metadata = header + self.kv.len();
        let infos = metadata + self.infos.len();
        [("header", header), ("metadata", metadata), ("tensor infos", infos), ("tensor data", self.build().len())]
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}
