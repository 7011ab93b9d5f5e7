//! What a daemon is in its datacenter's cluster (`daemon::cluster` runs
//! the protocol): the writer, or a follower serving reads from its copy of
//! the published index. One [`Membership`] outlives the generations of a
//! member's service (a follower's copy is rebuilt at each publication), so
//! the HTTP layer asks it, not the store, where a write goes.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::store::ObjectLayout;
use crate::store::backend::ObjectBackend;

/// A member's role.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the lease: every write of the datacenter happens here.
    Writer,
    /// Serves reads from its copy of the newest publication and forwards
    /// writes to the writer.
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Follower => "follower",
        }
    }
}

/// One member's view of the cluster: `GET /state`'s `cluster` object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    pub role: Role,
    /// The writer's epoch (the lease's): bumped by every failover.
    pub epoch: u64,
    /// Where the writer answers (its `cluster.advertiseUrl`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// This member's own `advertiseUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// How far this member's copy may be behind the writer's newest
    /// publication: seconds since it last saw that it serves the newest
    /// one (0 on the writer).
    pub lag_seconds: f64,
    /// The members the bucket knows (each one says where it answers, its
    /// role and lag every few seconds); filled in by `GET /state`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRecord>,
}

/// What a member tells the others about itself, in the bucket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    pub holder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    pub role: Role,
    pub epoch: u64,
    pub lag_seconds: f64,
    /// When it last wrote this, milliseconds since the Unix epoch.
    pub seen_ms: u64,
}

/// A member's standing, shared by its generations.
pub struct Membership {
    holder: String,
    advertise: Option<String>,
    state: Mutex<Inner>,
    /// Where the members' records are in the bucket.
    roster: Option<(Arc<dyn ObjectBackend>, ObjectLayout)>,
}

struct Inner {
    role: Role,
    epoch: u64,
    writer: Option<String>,
    /// When this member last confirmed it serves the newest publication.
    current_at: Instant,
}

impl Membership {
    pub fn new(holder: String, advertise: Option<String>, role: Role, epoch: u64) -> Self {
        Membership {
            holder,
            advertise,
            state: Mutex::new(Inner {
                role,
                epoch,
                writer: None,
                current_at: Instant::now(),
            }),
            roster: None,
        }
    }

    /// The same, reading and writing member records in `layout`'s store.
    pub fn with_roster(mut self, backend: Arc<dyn ObjectBackend>, layout: ObjectLayout) -> Self {
        self.roster = Some((backend, layout));
        self
    }

    /// Writes this member's record to the bucket.
    pub fn write_record(&self) -> crate::Result<()> {
        let Some((backend, layout)) = &self.roster else {
            return Ok(());
        };
        let name = layout.member(&self.holder);
        let body = serde_json::to_vec(&self.record())
            .map_err(|e| crate::Error::Internal(e.to_string()))?;
        backend
            .put_bytes(&name, &body)
            .map_err(|e| e.into_error(format!("writing {name}")))
    }

    /// The records of every member in the bucket (best effort), the most
    /// recently seen first.
    pub fn members(&self) -> Vec<MemberRecord> {
        let Some((backend, layout)) = &self.roster else {
            return Vec::new();
        };
        let Ok(listed) = backend.list(&layout.members()) else {
            return Vec::new();
        };
        let mut out: Vec<MemberRecord> = listed
            .iter()
            .filter_map(|o| backend.get_versioned(&o.name).ok().flatten())
            .filter_map(|(raw, _)| serde_json::from_slice(&raw).ok())
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.seen_ms));
        out
    }

    /// This member's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn role(&self) -> Role {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .role
    }

    /// Where writes go while this member follows (None: the writer is
    /// unknown, as during a failover).
    pub fn writer(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .writer
            .clone()
    }

    /// This member now writes, at `epoch`.
    pub fn lead(&self, epoch: u64) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.role = Role::Writer;
        s.epoch = epoch;
        s.writer = self.advertise.clone();
        s.current_at = Instant::now();
    }

    /// This member follows the writer of `epoch` at `writer`; `current`
    /// when its copy holds that writer's newest publication.
    pub fn follow(&self, epoch: u64, writer: Option<String>, current: bool) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.role = Role::Follower;
        s.epoch = epoch;
        s.writer = writer;
        if current {
            s.current_at = Instant::now();
        }
    }

    /// The standing now, without the member list.
    pub fn standing(&self) -> Standing {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Standing {
            role: s.role,
            epoch: s.epoch,
            writer: s.writer.clone(),
            advertise: self.advertise.clone(),
            lag_seconds: match s.role {
                Role::Writer => 0.0,
                Role::Follower => s.current_at.elapsed().as_secs_f64(),
            },
            members: Vec::new(),
        }
    }

    /// What this member writes about itself to the bucket.
    pub fn record(&self) -> MemberRecord {
        let st = self.standing();
        MemberRecord {
            holder: self.holder.clone(),
            advertise: self.advertise.clone(),
            role: st.role,
            epoch: st.epoch,
            lag_seconds: st.lag_seconds,
            seen_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}
