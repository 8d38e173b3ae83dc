//! Files the client writes from a server's stream: whole or not at all.

use super::{out, CliError};
use crate::cli::Conn;
use crate::rpc::pb;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn failed(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("{}: {e}", path.display()))
}

/// Writes a streamed file chunk by chunk as it arrives, and says so.
pub async fn save(
    conn: &Conn,
    stream: tonic::Response<tonic::Streaming<pb::Chunk>>,
    path: &Path,
) -> Result<(), CliError> {
    let n = save_whole(stream.into_inner(), path).await?;
    out(
        conn,
        json!({"file": path, "bytes": n}),
        format!("wrote {} ({n} bytes)", path.display()),
    );
    Ok(())
}

/// Writes the stream into `path` only if it ends well: it goes to `path.part` first,
/// renamed once whole and durable, removed if the stream breaks off. A payment file cut
/// short must never lie where a whole one is expected.
async fn save_whole(
    mut chunks: impl tokio_stream::Stream<Item = Result<pb::Chunk, tonic::Status>> + Unpin,
    path: &Path,
) -> Result<u64, CliError> {
    use tokio_stream::StreamExt;
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let written = async {
        let file = std::fs::File::create(&part).map_err(|e| failed(&part, e))?;
        let mut f = std::io::BufWriter::new(file);
        let mut n = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            f.write_all(&chunk.data).map_err(|e| failed(&part, e))?;
            n += chunk.data.len() as u64;
        }
        let file = f.into_inner().map_err(|e| failed(&part, e.error()))?;
        file.sync_all().map_err(|e| failed(&part, e))?;
        std::fs::rename(&part, path).map_err(|e| failed(path, e))?;
        Ok(n)
    }
    .await;
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &[u8]) -> Result<pb::Chunk, tonic::Status> {
        Ok(pb::Chunk {
            data: data.to_vec(),
        })
    }

    #[tokio::test]
    async fn a_file_is_saved_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virements.xml");
        let whole = tokio_stream::iter(vec![chunk(b"<Document>"), chunk(b"</Document>")]);
        assert_eq!(save_whole(whole, &path).await.unwrap(), 21);
        assert_eq!(std::fs::read(&path).unwrap(), b"<Document></Document>");

        // Cut short: the earlier file stays as it was, and no part of the new one is left.
        let cut = tokio_stream::iter(vec![
            chunk(b"<Document>"),
            Err(tonic::Status::aborted("nothing was read for 30000 ms")),
        ]);
        let e = save_whole(cut, &path).await.unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"<Document></Document>");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");

        let other = dir.path().join("usage.csv");
        let cut = tokio_stream::iter(vec![chunk(b"a;b\n"), Err(tonic::Status::data_loss("x"))]);
        assert!(save_whole(cut, &other).await.is_err());
        assert!(!other.exists());
    }
}
