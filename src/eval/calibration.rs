//! Calibration tensors for static int8 quantization (`objdet calibration`, used by
//! `make quantize`): images of a labelled set decoded and preprocessed by objdet's own pipeline
//! ([`Model::input_for`]), so the quantizer measures activations on exactly the inputs serving
//! will give the model — no second letterbox written in Python to drift from this one.
//!
//! Written as one NumPy `.npy` array `[N, …input shape]` (`np.load` reads it; no pickle).

use std::io::Write as _;
use std::path::Path;

use crate::detector::{Input, Model, TensorData};

use super::Dataset;

/// Why the tensors could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Writing the file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No image of the set could be prepared.
    #[error("no image of the set could be decoded ({failed} failed)")]
    NoImages {
        /// Images that failed.
        failed: usize,
    },
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Tensors in the file.
    pub count: usize,
    /// One tensor's shape.
    pub shape: [usize; 4],
    /// Images that could not be decoded (skipped).
    pub failed: usize,
}

/// Writes the input tensors of up to `count` images of `data`, spread evenly over the set, to
/// `out` as a `.npy` array.
pub fn write(model: &mut Model, data: &Dataset, count: usize, out: &Path) -> Result<Written, CalibrationError> {
    let err = |source| CalibrationError::Write { path: out.display().to_string(), source };
    let n = data.samples.len();
    let take = count.clamp(1, n.max(1));
    let picks: Vec<usize> = (0..take).map(|i| i * n / take).collect();
    let mut body: Vec<u8> = Vec::new();
    let (mut shape, mut written, mut failed, mut dtype) = ([0usize; 4], 0usize, 0usize, "<f4");
    for i in picks {
        let Ok(bytes) = std::fs::read(&data.samples[i].path) else {
            failed += 1;
            continue;
        };
        let Ok(tensor) = model.input_for(&Input::Image(bytes.into())) else {
            failed += 1;
            continue;
        };
        if written > 0 && tensor.shape != shape {
            // A dynamic input letterboxed per image: tensors of one array must agree.
            failed += 1;
            continue;
        }
        shape = tensor.shape;
        match &tensor.data {
            TensorData::F32(v) => body.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            TensorData::U8(v) => {
                dtype = "|u1";
                body.extend_from_slice(v);
            }
        }
        written += 1;
    }
    if written == 0 {
        return Err(CalibrationError::NoImages { failed });
    }
    let dims: Vec<String> = std::iter::once(written).chain(shape[1..].iter().copied()).map(|d| d.to_string()).collect();
    let header = npy_header(dtype, &dims.join(", "));
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).map_err(err)?);
    f.write_all(&header).and_then(|()| f.write_all(&body)).and_then(|()| f.flush()).map_err(err)?;
    Ok(Written { count: written, shape, failed })
}

/// A `.npy` version 1.0 header for a C-order array of `dtype` and `shape` (e.g. `"4, 3, 320, 320"`),
/// padded with spaces so the data starts at a multiple of 64 bytes, as NumPy writes it.
fn npy_header(dtype: &str, shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '{dtype}', 'fortran_order': False, 'shape': ({shape}), }}");
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn npy_header_as_numpy_writes_it() {
        // np.save of np.zeros((2, 3, 4, 5), '<f4'): the same 128-byte header.
        let h = super::npy_header("<f4", "2, 3, 4, 5");
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 5), }"));
        assert!(text.ends_with(" \n"));
    }
}
