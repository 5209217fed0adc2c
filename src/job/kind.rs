//! What the middle knows of a platform, as data: its name, the report
//! family it writes, how its tokens are kept and shown. Each platform's
//! folder declares its [`PlatformInfo`] and [`FamilyInfo`]; the registration
//! list ([`crate::platforms`]) gathers them into a [`Catalog`]. Nothing below
//! the platforms matches on which platform a job is for.

use std::fmt;
use std::hash::{Hash, Hasher};

use super::token::TokenCodec;

/// A platform, as the middle knows it.
#[derive(Debug)]
pub struct PlatformInfo {
    /// Metrics label, stored name, the word in job answers (`apns`, `fcm`, …).
    pub name: &'static str,
    /// The report family it writes.
    pub family: Family,
    /// How its tokens are kept, shown and carried.
    pub codec: TokenCodec,
}

/// The upstream a job is delivered through. Two platforms are the same when
/// their names are.
#[derive(Clone, Copy)]
pub struct Platform(&'static PlatformInfo);

impl Platform {
    /// The platform `info` describes.
    pub const fn new(info: &'static PlatformInfo) -> Self {
        Self(info)
    }

    /// The lower-case name used in metrics labels, stored jobs and job answers.
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    /// The report family it writes.
    pub fn family(self) -> Family {
        self.0.family
    }

    /// How its tokens are kept, shown and carried.
    pub fn codec(self) -> TokenCodec {
        self.0.codec
    }
}

impl PartialEq for Platform {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Platform {}

impl Hash for Platform {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A drainable report list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// Tokens to purge (`/apns/report/unregistered`, `/gcm/report/notregistered`).
    Unregistered,
    /// Permanent failures.
    Failures,
    /// Canonical replacements (legacy GCM).
    Canonical,
}

impl ListKind {
    /// Every list.
    pub const ALL: [ListKind; 3] = [
        ListKind::Unregistered,
        ListKind::Failures,
        ListKind::Canonical,
    ];

    /// Its name in stored keys.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Unregistered => "unregistered",
            ListKind::Failures => "failures",
            ListKind::Canonical => "canonical",
        }
    }

    /// The list called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// The shape of a family's totals answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Totals {
    /// `attempts`, `successes`, `failures`, `pending`, `retries`,
    /// `unregistered`, … (APNs, Web Push, HMS).
    Plain,
    /// GoCM's fields first (`canonicals`, `notregistered`), then ours.
    GoCm,
}

/// One drainable list's route.
#[derive(Debug)]
pub struct ListRoute {
    /// Which list.
    pub list: ListKind,
    /// Its path under `/<family>/report/`.
    pub path: &'static str,
    /// The key of the answer's array.
    pub key: &'static str,
    /// Entries shown as bare token strings (GoCM's `notregistered`), not objects.
    pub bare_tokens: bool,
}

/// How gorush numbers and names a family's devices (`platform` in its
/// notifications).
#[derive(Debug)]
pub struct GorushPlatform {
    /// gorush's `platform` number (1 iOS, 2 Android, 3 Huawei).
    pub number: i64,
    /// Its word in gorush's `logs` and `/api/stat/app` (`ios`, `android`, `huawei`).
    pub word: &'static str,
    /// Its name in error messages (`iOS`, `Android`, `Huawei`).
    pub label: &'static str,
}

/// A report family: the platforms writing one set of `/…/report*` routes
/// (FCM v1 and legacy GCM both report under `/gcm/report*`).
#[derive(Debug)]
pub struct FamilyInfo {
    /// Its route prefix and stored name (`apns`, `gcm`, `webpush`, …).
    pub name: &'static str,
    /// The platform's name for people (`APNs`, `Google (FCM/GCM)`, …).
    pub label: &'static str,
    /// The config section(s) that turn it on (`[apns]`, `[fcm] or [gcm]`).
    pub section: &'static str,
    /// The words of its send routes (`/<word>/send`): its name and aliases.
    pub send_routes: &'static [&'static str],
    /// The shape of its totals.
    pub totals: Totals,
    /// Its lists' routes.
    pub lists: &'static [ListRoute],
    /// The key a token goes by in list entries and rejections (`token`, or
    /// `endpoint` for a Web Push subscription).
    pub token_key: &'static str,
    /// How gorush's `/api/push` names its devices, when it has a number for them.
    pub gorush: Option<GorushPlatform>,
}

/// A report family. Two families are the same when their names are.
#[derive(Clone, Copy)]
pub struct Family(&'static FamilyInfo);

impl Family {
    /// The family `info` describes.
    pub const fn new(info: &'static FamilyInfo) -> Self {
        Self(info)
    }

    /// Its route prefix (`apns` for `/apns/report`, `gcm` for `/gcm/report`),
    /// also its name in stored keys.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Everything else about it.
    pub fn info(self) -> &'static FamilyInfo {
        self.0
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Family {}

impl Hash for Family {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// Every platform this build knows (configured or not): how stored jobs'
/// platform and family names are read back.
#[derive(Debug, Clone, Copy)]
pub struct Catalog(&'static [Platform]);

impl Catalog {
    /// A catalog of `platforms`.
    pub const fn new(platforms: &'static [Platform]) -> Self {
        Self(platforms)
    }

    /// Every platform.
    pub fn platforms(self) -> impl Iterator<Item = Platform> {
        self.0.iter().copied()
    }

    /// The platform called `name`.
    pub fn platform(self, name: &str) -> Option<Platform> {
        self.platforms().find(|p| p.as_str() == name)
    }

    /// Every family, once, in the order of their first platform.
    pub fn families(self) -> Vec<Family> {
        let mut out: Vec<Family> = Vec::new();
        for p in self.platforms() {
            if !out.contains(&p.family()) {
                out.push(p.family());
            }
        }
        out
    }

    /// The family called `name`.
    pub fn family(self, name: &str) -> Option<Family> {
        self.platforms()
            .map(Platform::family)
            .find(|f| f.name() == name)
    }
}

/// Descriptors for the floor's own tests (no platform module is below it).
#[cfg(test)]
pub mod test {
    use super::*;

    /// A family reported the plain way.
    pub const FAMILY: Family = Family::new(&FamilyInfo {
        name: "test",
        label: "Test",
        section: "[test]",
        send_routes: &["test"],
        totals: Totals::Plain,
        lists: &[],
        token_key: "token",
        gorush: None,
    });

    /// A platform of text tokens.
    pub const PLATFORM: Platform = Platform::new(&PlatformInfo {
        name: "test",
        family: FAMILY,
        codec: TokenCodec::Text,
    });
}
