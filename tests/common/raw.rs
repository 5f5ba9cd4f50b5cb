//! A client that sends any bytes as a gRPC message, to see what the server makes of requests
//! that no generated client would send.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// A codec of raw bytes both ways.
#[derive(Debug, Default, Clone, Copy)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }
    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `path` (e.g. `/posture.v1.ComplianceService/CheckAccess`) with `bytes` as the
/// message, with `authorization: Bearer <secret>` when given.
pub async fn call(
    channel: Channel,
    path: &'static str,
    bytes: Vec<u8>,
    secret: Option<&str>,
) -> Result<Vec<u8>, Status> {
    call_as(channel, path, bytes, secret.map(|s| format!("Bearer {s}")).as_deref()).await
}

/// The same, with `authorization` as the whole header's value (any value at all).
pub async fn call_as(
    channel: Channel,
    path: &str,
    bytes: Vec<u8>,
    authorization: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(bytes);
    if let Some(value) = authorization {
        req.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(req, path, Raw).await.map(|r| r.into_inner())
}
