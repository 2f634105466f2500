//! Feeds arbitrary bytes, in arbitrary splits, to every frame decoder that reads
//! bytes from a less trusted side: the host reading the guest, the guest reading
//! the host, and the runtime reading its client. Any panic is a bug.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use msb_control::{FromRuntime, ToRuntime};
use msb_protocol::{FrameCodec, GuestMessage, HostMessage};
use tokio_util::codec::Decoder;

fn drain<D: Decoder>(mut decoder: D, data: &[u8], split: usize) {
    let mut buf = BytesMut::new();
    for chunk in [&data[..split], &data[split..]] {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                // A decode error closes the channel: nothing more is read.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.decode_eof(&mut buf);
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    drain(FrameCodec::<GuestMessage, HostMessage>::new(), data, split);
    drain(FrameCodec::<HostMessage, GuestMessage>::new(), data, split);
    drain(FrameCodec::<ToRuntime, FromRuntime>::new(), data, split);
});
