//! What the CPU offers ONNX Runtime's int8 kernels: whether an int8 model can be faster than its
//! fp32 original here is decided by these instructions (VNNI / AMX on x86, dot product / i8mm on
//! Arm), not by the model. Read once from `/proc/cpuinfo` at load; logged at Init and shown by
//! `/healthz`, so a user sees which int8 path AWS gave their function.

use serde::Serialize;

/// The CPU's model name and the features that decide int8 speed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// `model name` (x86) or the implementer/part (Arm), as the kernel reports it.
    pub model: String,
    /// The features of [`INT8_FEATURES`] the CPU has, in that order.
    pub features: Vec<&'static str>,
    /// The fastest int8 path those features give ORT, in words.
    pub int8: &'static str,
}

/// `/proc/cpuinfo` flags that matter for int8 and fp32 GEMMs, x86 then Arm.
pub const INT8_FEATURES: &[&str] =
    &["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve"];

impl CpuInfo {
    /// This machine's (empty where `/proc/cpuinfo` cannot be read).
    pub fn of_this_machine() -> Self {
        std::fs::read_to_string("/proc/cpuinfo").map(|t| Self::parse(&t)).unwrap_or_default()
    }

    /// Reads the first processor's entry of a `/proc/cpuinfo` text.
    pub fn parse(text: &str) -> Self {
        let field = |names: &[&str]| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| names.contains(&k.trim()))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field(&["flags", "Features"]).unwrap_or_default();
        let have: Vec<&str> = flags.split_whitespace().collect();
        let features: Vec<&'static str> = INT8_FEATURES.iter().copied().filter(|f| have.contains(f)).collect();
        let model = field(&["model name"]).unwrap_or_else(|| {
            let part = |k: &str| field(&[k]).unwrap_or_default();
            let arm = format!("{} {}", part("CPU implementer"), part("CPU part"));
            arm.trim().to_string()
        });
        let has = |f: &str| features.contains(&f);
        let int8 = if has("amx_int8") {
            "AMX (int8 tiles: int8 usually much faster than fp32)"
        } else if has("avx512_vnni") {
            "AVX-512 VNNI (int8 dot products: int8 usually faster than fp32)"
        } else if has("avx_vnni") {
            "AVX-VNNI (int8 dot products: int8 usually faster than fp32)"
        } else if has("i8mm") {
            "Arm i8mm (int8 matrix multiply: int8 usually faster than fp32)"
        } else if has("asimddp") {
            "Arm dot product (int8 usually faster than fp32)"
        } else if has("avx2") {
            "AVX2 without VNNI (int8 rarely faster than fp32: measure)"
        } else {
            "no int8 dot-product instructions (int8 unlikely to be faster: measure)"
        };
        CpuInfo { model, features, int8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_paths_from_cpuinfo() {
        let epyc = "processor\t: 0\nmodel name\t: AMD EPYC 7R13\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\n";
        let c = CpuInfo::parse(epyc);
        assert_eq!(c.model, "AMD EPYC 7R13");
        assert_eq!(c.features, vec!["avx2"]);
        assert!(c.int8.starts_with("AVX2 without VNNI"));
        let xeon =
            "model name : Intel Xeon Platinum 8488C\nflags : avx2 avx512f avx512_vnni amx_bf16 amx_int8 amx_tile\n";
        let c = CpuInfo::parse(xeon);
        assert_eq!(c.features, vec!["avx2", "avx512f", "avx512_vnni", "amx_int8"]);
        assert!(c.int8.starts_with("AMX"));
        let graviton = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp sha512 sve i8mm\nCPU implementer : 0x41\nCPU part : 0xd40\n";
        let c = CpuInfo::parse(graviton);
        assert_eq!(c.model, "0x41 0xd40");
        assert_eq!(c.features, vec!["asimd", "asimddp", "i8mm", "sve"]);
        assert!(c.int8.starts_with("Arm i8mm"));
        assert!(CpuInfo::parse("").int8.starts_with("no int8"));
    }
}
