//! The `?action=` values of `POST /:login/images/:id`, spelled once.

/// What `POST /:login/images/:id?action=` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageAction {
    /// UpdateImage (share and unshare send the whole new `acl`).
    Update,
    /// CloneImage.
    Clone,
    /// ExportImage (to Manta).
    Export,
}

impl ImageAction {
    pub const ALL: [ImageAction; 3] =
        [ImageAction::Update, ImageAction::Clone, ImageAction::Export];

    pub const fn as_str(self) -> &'static str {
        match self {
            ImageAction::Update => "update",
            ImageAction::Clone => "clone",
            ImageAction::Export => "export",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}
