//! Mock FCM (placeholder; being written).
