//! `backup --dry-run`: the store as a run sees it, with nothing written to
//! it. Reads go to the real store; writes land in an overlay that keeps the
//! metadata a run reads back (the marker, locks, manifests, parts, indexes)
//! and only the size of data objects (packs, content, tables, format 1's
//! per-backup files), which a run never reads back, so memory stays bounded
//! by the metadata; deletes touch the overlay only. Listings merge both sides. What
//! the run counts as uploaded is what a real run would have sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::repo::layout;
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// Whether `location` holds data (file content, tables), not metadata.
fn is_data(location: &Path) -> bool {
    let parts: Vec<_> = location.parts().collect();
    match parts.first().map(|p| p.as_ref()) {
        Some(layout::TABLES | layout::KEYED_CONTENT | layout::PACKS) => true,
        Some(layout::BACKUPS) => parts.get(2).is_some_and(|p| p.as_ref() == "files"),
        _ => location
            .as_ref()
            .starts_with(&format!("{}/", layout::CONTENT)),
    }
}

/// The real store under an overlay of what a dry run wrote.
#[derive(Debug)]
pub(crate) struct DryRun {
    inner: Arc<dyn ObjectStore>,
    kept: InMemory,
    /// Larger objects written: their size only.
    sized: Arc<Mutex<BTreeMap<Path, u64>>>,
}

impl DryRun {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            kept: InMemory::new(),
            sized: Arc::default(),
        }
    }

    fn not_kept(location: &Path) -> object_store::Error {
        object_store::Error::Generic {
            store: "dry run",
            source: format!("{location} was written in this dry run and not kept").into(),
        }
    }

    fn sized_meta(&self, prefix: Option<&Path>) -> Vec<ObjectMeta> {
        let sized = self.sized.lock().expect("not poisoned");
        sized
            .iter()
            .filter(|(key, _)| prefix.is_none_or(|p| key.prefix_matches(p)))
            .map(|(key, &size)| meta(key.clone(), size))
            .collect()
    }
}

fn meta(location: Path, size: u64) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: chrono::Utc::now(),
        size,
        e_tag: None,
        version: None,
    }
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DryRun({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for DryRun {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !is_data(location) {
            return self.kept.put_opts(location, payload, opts).await;
        }
        let size = payload.content_length() as u64;
        self.sized
            .lock()
            .expect("not poisoned")
            .insert(location.clone(), size);
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Discarded {
            location: location.clone(),
            size: 0,
            sized: self.sized.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        match self.kept.get_opts(location, options.clone()).await {
            Err(object_store::Error::NotFound { .. }) => {}
            kept => return kept,
        }
        let sized = self
            .sized
            .lock()
            .expect("not poisoned")
            .get(location)
            .copied();
        match (sized, options.head) {
            (Some(size), true) => Ok(GetResult {
                payload: object_store::GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta: meta(location.clone(), size),
                range: 0..0,
                attributes: Default::default(),
                extensions: Default::default(),
            }),
            (Some(_), false) => Err(Self::not_kept(location)),
            (None, _) => self.inner.get_opts(location, options).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Deletes touch the overlay only; the real store keeps everything.
        let (kept, sized) = (self.kept.clone(), self.sized.clone());
        locations
            .then(move |location| {
                let (kept, sized) = (kept.clone(), sized.clone());
                async move {
                    let location = location?;
                    sized.lock().expect("not poisoned").remove(&location);
                    match kept.delete(&location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(location),
                        Err(e) => Err(e),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let written = self.sized_meta(prefix).into_iter().map(Ok);
        self.inner
            .list(prefix)
            .chain(self.kept.list(prefix))
            .chain(futures::stream::iter(written))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        let kept = self.kept.list_with_delimiter(prefix).await?;
        listed.objects.extend(kept.objects);
        for dir in kept.common_prefixes {
            if !listed.common_prefixes.contains(&dir) {
                listed.common_prefixes.push(dir);
            }
        }
        let depth = prefix.map_or(0, |p| p.parts().count());
        for object in self.sized_meta(prefix) {
            match object.location.parts().count() == depth + 1 {
                true => listed.objects.push(object),
                false => {
                    let dir: Path = object.location.parts().take(depth + 1).collect();
                    if !listed.common_prefixes.contains(&dir) {
                        listed.common_prefixes.push(dir);
                    }
                }
            }
        }
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let bytes = self
            .get_opts(from, GetOptions::default())
            .await?
            .bytes()
            .await?;
        let mode = match options.mode {
            object_store::CopyMode::Overwrite => object_store::PutMode::Overwrite,
            object_store::CopyMode::Create => object_store::PutMode::Create,
        };
        let put = PutOptions {
            mode,
            ..Default::default()
        };
        self.put_opts(to, PutPayload::from_bytes(bytes), put)
            .await
            .map(|_| ())
    }
}

/// A multipart upload whose parts are counted and dropped.
#[derive(Debug)]
struct Discarded {
    location: Path,
    size: u64,
    sized: Arc<Mutex<BTreeMap<Path, u64>>>,
}

#[async_trait]
impl MultipartUpload for Discarded {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.size += data.content_length() as u64;
        Box::pin(futures::future::ready(Ok(())))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut sized = self.sized.lock().expect("not poisoned");
        sized.insert(self.location.clone(), self.size);
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn writes_stay_in_the_overlay() {
        let real = Arc::new(InMemory::new());
        real.put(
            &Path::from("backups/old"),
            Bytes::from_static(b"old").into(),
        )
        .await
        .unwrap();
        let dry = DryRun::new(real.clone());
        dry.put(
            &Path::from("backups/small"),
            Bytes::from_static(b"small").into(),
        )
        .await
        .unwrap();
        let data = Bytes::from(vec![7u8; 1000]);
        dry.put(&Path::from("packs/data"), data.into())
            .await
            .unwrap();
        let small = dry
            .get(&Path::from("backups/small"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(small, Bytes::from_static(b"small"));
        assert_eq!(
            dry.head(&Path::from("packs/data")).await.unwrap().size,
            1000
        );
        assert!(
            dry.get(&Path::from("packs/data")).await.is_err(),
            "not kept"
        );
        let listed: Vec<ObjectMeta> = dry.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 3);
        let top = dry.list_with_delimiter(None).await.unwrap();
        assert_eq!(
            top.common_prefixes,
            [Path::from("backups"), Path::from("packs")]
        );
        dry.delete(&Path::from("backups/old")).await.unwrap();
        let real_keys: Vec<ObjectMeta> = real.list(None).try_collect().await.unwrap();
        assert_eq!(real_keys.len(), 1, "the real store is untouched");
        assert_eq!(real_keys[0].location, Path::from("backups/old"));
    }
}
