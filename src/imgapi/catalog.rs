//! The catalog: what ListImages decides on, for every image, in memory and
//! in listing order, so that a page of a listing touches the records it
//! returns and not every image (100,000 images decode in seconds; their
//! summaries filter in milliseconds). About a hundred bytes an image.
//!
//! The images table stays the truth. Every change of an image record is
//! followed by a refresh of its summary from the committed table, under
//! the catalog's lock, so a refresh never puts back an older state than
//! one already there. The catalog is built from the table at start.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{RwLock, RwLockReadGuard};

use uuid::Uuid;

use super::manifest::{Image, ImageState, Placeholder};
use super::{ApiResult, Images, time};
use crate::store::Store;

/// What a listing decides on, from a stored image or its summary.
pub trait Facts {
    fn uuid(&self) -> Uuid;
    fn owner(&self) -> Uuid;
    fn state(&self) -> ImageState;
    fn activated(&self) -> bool;
    fn disabled(&self) -> bool;
    fn public(&self) -> bool;
    fn shared_with(&self, account: &Uuid) -> bool;
    fn name(&self) -> &str;
    fn version(&self) -> &str;
    fn os(&self) -> &str;
    fn type_(&self) -> &str;
}

impl Facts for Image {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn owner(&self) -> Uuid {
        self.owner
    }
    fn state(&self) -> ImageState {
        Image::state(self)
    }
    fn activated(&self) -> bool {
        self.activated
    }
    fn disabled(&self) -> bool {
        self.disabled
    }
    fn public(&self) -> bool {
        self.public
    }
    fn shared_with(&self, account: &Uuid) -> bool {
        self.acl.contains(account)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn os(&self) -> &str {
        &self.os
    }
    fn type_(&self) -> &str {
        &self.type_
    }
}

/// An image as the catalog keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    uuid: Uuid,
    owner: Uuid,
    published_ms: u64,
    activated: bool,
    disabled: bool,
    public: bool,
    placeholder: Option<Placeholder>,
    acl: Box<[Uuid]>,
    name: Box<str>,
    version: Box<str>,
    os: Box<str>,
    type_: Box<str>,
}

/// An image's place in a listing: published_at (0 when never published),
/// then uuid.
pub fn published_ms(img: &Image) -> u64 {
    img.published_at
        .as_deref()
        .and_then(time::parse_iso8601)
        .unwrap_or(0)
}

impl Summary {
    fn of(img: &Image) -> Self {
        Summary {
            uuid: img.uuid,
            owner: img.owner,
            published_ms: published_ms(img),
            activated: img.activated,
            disabled: img.disabled,
            public: img.public,
            placeholder: img.placeholder_state,
            acl: img.acl.clone().into_boxed_slice(),
            name: img.name.as_str().into(),
            version: img.version.as_str().into(),
            os: img.os.as_str().into(),
            type_: img.type_.as_str().into(),
        }
    }

    fn key(&self) -> (u64, Uuid) {
        (self.published_ms, self.uuid)
    }
}

impl Facts for Summary {
    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn owner(&self) -> Uuid {
        self.owner
    }
    fn state(&self) -> ImageState {
        ImageState::of(self.placeholder, self.activated, self.disabled)
    }
    fn activated(&self) -> bool {
        self.activated
    }
    fn disabled(&self) -> bool {
        self.disabled
    }
    fn public(&self) -> bool {
        self.public
    }
    fn shared_with(&self, account: &Uuid) -> bool {
        self.acl.contains(account)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn os(&self) -> &str {
        &self.os
    }
    fn type_(&self) -> &str {
        &self.type_
    }
}

/// Summaries by uuid and in listing order.
#[derive(Default)]
pub struct Entries {
    by_uuid: HashMap<Uuid, Summary>,
    order: BTreeSet<(u64, Uuid)>,
}

impl Entries {
    fn set(&mut self, s: Summary) {
        if let Some(old) = self.by_uuid.get(&s.uuid) {
            self.order.remove(&old.key());
        }
        self.order.insert(s.key());
        self.by_uuid.insert(s.uuid, s);
    }

    fn remove(&mut self, uuid: &Uuid) {
        if let Some(old) = self.by_uuid.remove(uuid) {
            self.order.remove(&old.key());
        }
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Summary> {
        self.by_uuid.get(uuid)
    }

    /// The listing position of an image.
    pub fn position(&self, uuid: &Uuid) -> Option<(u64, Uuid)> {
        self.by_uuid.get(uuid).map(Summary::key)
    }

    /// Summaries in listing order from `from` (inclusive), ascending or
    /// descending.
    pub fn walk(
        &self,
        from: Option<(u64, Uuid)>,
        desc: bool,
    ) -> Box<dyn Iterator<Item = &Summary> + '_> {
        let keys: Box<dyn Iterator<Item = &(u64, Uuid)>> = match (from, desc) {
            (None, false) => Box::new(self.order.iter()),
            (None, true) => Box::new(self.order.iter().rev()),
            (Some(k), false) => Box::new(self.order.range(k..)),
            (Some(k), true) => Box::new(self.order.range(..=k).rev()),
        };
        Box::new(keys.filter_map(|(_, u)| self.by_uuid.get(u)))
    }
}

/// The catalog of one service.
#[derive(Default)]
pub struct Catalog {
    entries: RwLock<Entries>,
}

impl Catalog {
    /// Every image of the store.
    pub fn load(store: &Store) -> crate::Result<Self> {
        let mut e = Entries::default();
        store.scan::<Images>(&[], |_, img| {
            e.set(Summary::of(&img));
            ControlFlow::Continue(())
        })?;
        Ok(Catalog {
            entries: RwLock::new(e),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the summaries of `uuids` up to date with the committed table.
    pub fn refresh(&self, store: &Store, uuids: &[Uuid]) -> ApiResult<()> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        for u in uuids {
            match store.get::<Images>(u)? {
                Some(img) => e.set(Summary::of(&img)),
                None => e.remove(u),
            }
        }
        Ok(())
    }

    /// True when the catalog holds exactly what the table holds (tests).
    pub fn matches(&self, store: &Store) -> crate::Result<bool> {
        let fresh = Catalog::load(store)?;
        let (a, b) = (self.read(), fresh.read());
        Ok(a.by_uuid == b.by_uuid && a.order == b.order)
    }
}
