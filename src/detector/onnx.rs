//! The few parts of an ONNX file objdet reads itself, without ONNX Runtime: the graph's inputs and
//! outputs (names, element types, shapes with their dynamic dimensions), the model's metadata
//! (`metadata_props`), and the initializers' storage (the optimized-graph cache reads their side
//! files). The protobuf messages below are the fields of onnx/onnx.proto3 that objdet needs; every
//! other field is skipped by the decoder.

use std::path::Path;

use prost::Message;

/// `TensorProto.DataType` values.
pub mod dtype {
    /// float32.
    pub const FLOAT: i32 = 1;
    /// uint8.
    pub const UINT8: i32 = 2;
    /// int8.
    pub const INT8: i32 = 3;
    /// uint16.
    pub const UINT16: i32 = 4;
    /// int16.
    pub const INT16: i32 = 5;
    /// int32.
    pub const INT32: i32 = 6;
    /// int64.
    pub const INT64: i32 = 7;
    /// bool.
    pub const BOOL: i32 = 9;
    /// float16.
    pub const FLOAT16: i32 = 10;
    /// float64.
    pub const DOUBLE: i32 = 11;
    /// uint32.
    pub const UINT32: i32 = 12;
    /// uint64.
    pub const UINT64: i32 = 13;

    /// The ONNX name of an element type, for messages.
    pub fn name(t: i32) -> &'static str {
        match t {
            FLOAT => "float32",
            UINT8 => "uint8",
            INT8 => "int8",
            UINT16 => "uint16",
            INT16 => "int16",
            INT32 => "int32",
            INT64 => "int64",
            BOOL => "bool",
            FLOAT16 => "float16",
            DOUBLE => "float64",
            UINT32 => "uint32",
            UINT64 => "uint64",
            16 => "bfloat16",
            _ => "another type",
        }
    }
}

/// `TensorProto.DataLocation.EXTERNAL`.
pub const EXTERNAL: i32 = 1;

/// `ModelProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Key/value metadata (Ultralytics writes `names`, `imgsz`, `stride`, `task`, ...).
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Inputs (in older IR versions also the initializers).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `TensorProto`, without its data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type ([`dtype`]).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Where external data lives (`location`, `offset`, `length`).
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    /// [`EXTERNAL`] when the data is in a side file.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto` (only its tensor case, field 1 of the `value` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    /// A tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorTypeProto {
    /// Element type ([`dtype`]).
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape, when known.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<DimensionProto>,
}

/// `TensorShapeProto.Dimension`: a size or a symbol (the `value` oneof as two optional fields,
/// which is the same on the wire).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DimensionProto {
    /// A fixed size.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// A symbolic (dynamic) size.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// Dynamic (a symbol such as `batch` or `height`, or unnamed).
    Dynamic(String),
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(n) if *n > 0 => Some(*n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(s) if s.is_empty() => f.write_str("?"),
            Dim::Dynamic(s) => f.write_str(s),
        }
    }
}

/// A graph input or output as objdet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// Name.
    pub name: String,
    /// Element type ([`dtype`]); 0 when the graph does not say.
    pub elem_type: i32,
    /// Dimensions (empty when the graph gives no shape).
    pub dims: Vec<Dim>,
}

impl std::fmt::Display for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        write!(f, "{} {}[{}]", crate::error::excerpt(&self.name), dtype::name(self.elem_type), dims.join(", "))
    }
}

/// What objdet reads of a model file before any session is built.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<Tensor>,
    /// Graph outputs.
    pub outputs: Vec<Tensor>,
    /// `metadata_props`, in file order.
    pub metadata: Vec<(String, String)>,
}

impl ModelInfo {
    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Decodes the interface of a serialized model.
    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let model = ModelProto::decode(bytes)?;
        let graph = model.graph.unwrap_or_default();
        let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let tensor = |v: &ValueInfoProto| {
            let t = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
            let dims = t
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match (d.dim_value, &d.dim_param) {
                            (Some(n), _) if n > 0 => Dim::Fixed(n),
                            (_, Some(p)) => Dim::Dynamic(p.clone()),
                            _ => Dim::Dynamic(String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Tensor { name: v.name.clone(), elem_type: t.map_or(0, |t| t.elem_type), dims }
        };
        Ok(ModelInfo {
            inputs: graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(tensor).collect(),
            outputs: graph.output.iter().map(tensor).collect(),
            metadata: model.metadata_props.into_iter().map(|e| (e.key, e.value)).collect(),
        })
    }

    /// Reads the interface of the model file at `path`.
    pub fn read(path: &Path) -> Result<Self, ReadError> {
        let bytes = std::fs::read(path).map_err(ReadError::Io)?;
        Self::decode(&bytes).map_err(ReadError::NotOnnx)
    }
}

/// Why a model file's interface could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file cannot be read.
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model")]
    NotOnnx(#[source] prost::DecodeError),
}

/// Decodes a serialized model's initializers (without their data).
pub fn initializers(bytes: &[u8]) -> Result<Vec<TensorProto>, prost::DecodeError> {
    Ok(ModelProto::decode(bytes)?.graph.map(|g| g.initializer).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| match d {
                Some(n) => DimensionProto { dim_value: Some(*n), dim_param: None },
                None => DimensionProto { dim_value: None, dim_param: Some("height".into()) },
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim }) }),
            }),
        }
    }

    #[test]
    fn reads_inputs_outputs_and_metadata_and_skips_initializer_inputs() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![TensorProto { name: "w".into(), data_type: dtype::FLOAT, ..Default::default() }],
                input: vec![
                    value("images", dtype::FLOAT, &[Some(1), Some(3), None, Some(640)]),
                    value("w", dtype::FLOAT, &[Some(8)]),
                ],
                output: vec![value("output0", dtype::FLOAT, &[Some(1), Some(84), Some(8400)])],
            }),
            metadata_props: vec![StringStringEntryProto { key: "stride".into(), value: "32".into() }],
        };
        let info = ModelInfo::decode(&model.encode_to_vec()).unwrap();
        assert_eq!(info.inputs.len(), 1);
        assert_eq!(info.inputs[0].dims[2], Dim::Dynamic("height".into()));
        assert_eq!(info.inputs[0].dims[3].fixed(), Some(640));
        assert_eq!(info.outputs[0].to_string(), "output0 float32[1, 84, 8400]");
        assert_eq!(info.meta("stride"), Some("32"));
        assert!(ModelInfo::decode(b"\xff\xff\xff not a model").is_err());
    }
}
