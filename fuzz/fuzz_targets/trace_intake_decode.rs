//! Fuzz target: the agent's trace intake (`/v0.4/traces`, `/v0.5/traces`, msgpack or JSON)
//! decodes and chunks an arbitrary body. First byte: bit 0 = v0.5, bit 1 = JSON.
//! Invariants: no panic; a refusal has a message; every decoded span lands in exactly one
//! chunk; each tracer payload survives a protobuf round trip byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use warden_agent::traces::fuzzing::decode_and_chunk;
use warden_proto::trace::TracerPayload;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let v05 = sel & 1 != 0;
    let json = sel & 2 != 0;
    match decode_and_chunk(v05, json, body) {
        Ok((payloads, spans)) => {
            let chunked: usize = payloads
                .iter()
                .flat_map(|p| &p.chunks)
                .map(|c| c.spans.len())
                .sum();
            assert_eq!(chunked, spans);
            for p in &payloads {
                assert!(!p.chunks.is_empty());
                let wire = p.encode_to_vec();
                let back = TracerPayload::decode(wire.as_slice()).expect("own encoding decodes");
                assert_eq!(back.encode_to_vec(), wire);
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
