//! pushgate: an HTTP push gateway for APNs and FCM.

pub mod mock;
