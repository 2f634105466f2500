//! Length-prefixed frames carrying postcard-encoded envelopes.

use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::{Envelope, MAX_FRAME_LEN};

/// Why a frame could not be read or written. After any of these the channel
/// is out of step and must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge,
    #[error("malformed frame")]
    Malformed(#[source] postcard::Error),
    #[error("channel closed in the middle of a frame")]
    Truncated,
    #[error("channel i/o failed")]
    Io(#[source] io::Error),
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        FrameError::Io(err)
    }
}

/// Decodes `Envelope<In>` and encodes `Envelope<Out>`; use it with
/// `tokio_util::codec::Framed` on any byte stream.
pub struct FrameCodec<In, Out> {
    lengths: LengthDelimitedCodec,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new() -> Self {
        Self {
            lengths: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_length(4)
                .max_frame_length(MAX_FRAME_LEN)
                .new_codec(),
            _types: PhantomData,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes one payload, refusing trailing bytes so that every frame has exactly
/// one meaning.
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<M>, FrameError> {
    let (envelope, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Malformed)?;
    if rest.is_empty() {
        Ok(envelope)
    } else {
        Err(FrameError::Malformed(
            postcard::Error::DeserializeBadEncoding,
        ))
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = Envelope<In>;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.lengths.decode(src) {
            Ok(Some(payload)) => decode_payload(&payload).map(Some),
            Ok(None) => Ok(None),
            // The only error the length codec raises on decode is an oversized length.
            Err(_) => Err(FrameError::TooLarge),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, FrameError> {
        match self.decode(src)? {
            Some(envelope) => Ok(Some(envelope)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

/// Serializes straight into the codec's output buffer: bulk data (serde bytes)
/// is copied once, with no intermediate payload vector. This matters under
/// emulation, where every pass over the data costs guest CPU.
struct BufFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BufFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.extend_from_slice(&[data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl<In, Out: Serialize> Encoder<Envelope<Out>> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Envelope<Out>, dst: &mut BytesMut) -> Result<(), FrameError> {
        // Same bytes as the length codec would write: a big-endian u32 length,
        // patched in once the payload is serialized behind it.
        let start = dst.len();
        dst.extend_from_slice(&[0; 4]);
        if let Err(err) = postcard::serialize_with_flavor(&item, BufFlavor(dst)) {
            dst.truncate(start);
            return Err(FrameError::Malformed(err));
        }
        let len = dst.len() - start - 4;
        if len > MAX_FRAME_LEN {
            dst.truncate(start);
            return Err(FrameError::TooLarge);
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    type HostSide = FrameCodec<GuestMessage, HostMessage>;
    type GuestSide = FrameCodec<HostMessage, GuestMessage>;

    fn exec_request() -> HostMessage {
        HostMessage::Exec(ExecRequest {
            program: "sh".into(),
            args: vec!["-c".into(), "echo ünïcode".into()],
            env: vec![("A".into(), "b=c".into())],
            cwd: Some("/tmp".into()),
            user: Some(User::Name("nobody".into())),
            stdin: StdinMode::Pipe,
            tty: Some(TtySize { cols: 80, rows: 24 }),
            output_window: 1 << 20,
        })
    }

    #[test]
    fn round_trips_every_direction() {
        let mut buf = BytesMut::new();
        HostSide::new()
            .encode(Envelope::new(7, exec_request()), &mut buf)
            .unwrap();
        HostSide::new()
            .encode(
                Envelope::new(8, HostMessage::Input(vec![0, 255, 10])),
                &mut buf,
            )
            .unwrap();
        let mut guest = GuestSide::new();
        assert_eq!(
            guest.decode(&mut buf).unwrap(),
            Some(Envelope::new(7, exec_request()))
        );
        assert_eq!(
            guest.decode(&mut buf).unwrap(),
            Some(Envelope::new(8, HostMessage::Input(vec![0, 255, 10])))
        );
        assert_eq!(guest.decode(&mut buf).unwrap(), None);

        let reply = GuestMessage::Exited(ExitStatus {
            code: Some(3),
            signal: None,
            guest_micros: 1234,
        });
        GuestSide::new()
            .encode(Envelope::new(7, reply.clone()), &mut buf)
            .unwrap();
        assert_eq!(
            HostSide::new().decode(&mut buf).unwrap(),
            Some(Envelope::new(7, reply))
        );
    }

    #[test]
    fn encodes_exactly_what_the_length_codec_and_postcard_would() {
        let item = Envelope::new(9, GuestMessage::Stdout(vec![7; 70_000]));
        let mut ours = BytesMut::from(&b"already here"[..]);
        GuestSide::new().encode(item.clone(), &mut ours).unwrap();
        let payload = postcard::to_stdvec(&item).unwrap();
        let mut reference = BytesMut::from(&b"already here"[..]);
        reference.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        reference.extend_from_slice(&payload);
        assert_eq!(ours, reference);
    }

    #[test]
    fn waits_for_a_partial_frame_and_reports_truncation_at_eof() {
        let mut whole = BytesMut::new();
        HostSide::new()
            .encode(Envelope::new(1, HostMessage::Shutdown), &mut whole)
            .unwrap();
        let mut guest = GuestSide::new();
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(guest.decode(&mut part).unwrap(), None);
        assert!(matches!(
            guest.decode_eof(&mut part),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn rejects_an_oversized_length_before_reading_the_body() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        assert!(matches!(
            GuestSide::new().decode(&mut buf),
            Err(FrameError::TooLarge)
        ));
    }

    #[test]
    fn refuses_to_encode_an_oversized_message() {
        let mut buf = BytesMut::new();
        let huge = HostMessage::Input(vec![0; MAX_FRAME_LEN + 1]);
        assert!(matches!(
            HostSide::new().encode(Envelope::new(1, huge), &mut buf),
            Err(FrameError::TooLarge)
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_garbage_and_trailing_bytes() {
        // A variant index no enum has.
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 1, 200][..]);
        assert!(matches!(
            GuestSide::new().decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));

        let mut payload = postcard::to_stdvec(&Envelope::new(1, HostMessage::Shutdown)).unwrap();
        payload.push(0);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&payload);
        assert!(matches!(
            GuestSide::new().decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep beside the fuzz target: xorshift bytes, with
        // small length prefixes so that most inputs reach the payload decoder.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut buf = BytesMut::new();
            let len = (state % 64) as u32;
            buf.extend_from_slice(&len.to_be_bytes());
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.extend_from_slice(&[state as u8]);
            }
            let _ = GuestSide::new().decode_eof(&mut buf.clone());
            let _ = HostSide::new().decode_eof(&mut buf);
        }
    }

    #[test]
    fn fs_messages_round_trip_and_end_requests_correctly() {
        let stat = FileStat {
            kind: FileKind::File,
            size: 5,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_nanos: -1,
        };
        let batch = GuestMessage::Fs(FsReply::Entries {
            entries: vec![DirEntry {
                name: "ünï".into(),
                stat: stat.clone(),
            }],
            more: true,
        });
        let mut buf = BytesMut::new();
        GuestSide::new()
            .encode(Envelope::new(3, batch.clone()), &mut buf)
            .unwrap();
        assert_eq!(
            HostSide::new().decode(&mut buf).unwrap(),
            Some(Envelope::new(3, batch.clone()))
        );
        assert!(!batch.ends_request());
        assert!(GuestMessage::Fs(FsReply::Entries {
            entries: vec![],
            more: false
        })
        .ends_request());
        assert!(GuestMessage::Fs(FsReply::Stat(stat)).ends_request());
        assert!(!GuestMessage::Data(vec![1]).ends_request());
        assert_eq!(GuestMessage::Data(vec![1, 2]).output_len(), Some(2));
        assert_eq!(GuestMessage::InputCredit(9).output_len(), None);
    }

    #[test]
    fn version_check() {
        let ok = Hello {
            version: VERSION,
            agent_version: "x".into(),
        };
        assert!(check_version(&ok).is_ok());
        let old = Hello {
            version: VERSION + 1,
            agent_version: "x".into(),
        };
        assert_eq!(
            check_version(&old),
            Err(VersionMismatch {
                guest: VERSION + 1,
                host: VERSION
            })
        );
    }
}
