//! Recognising the kernel's stub fence: what EXPORT_SYNC_FILE returns for a buffer that holds
//! no fence. Up to 6.12 it names itself "stub"; on 7.x every signalled fence is renamed
//! ("detached-driver"/"signaled-timeline"), but the stub keeps one timestamp for the life of the
//! kernel, so one export from a buffer that never had a fence calibrates it (docs/kernel-facts.md).

use std::os::fd::{AsFd, BorrowedFd};

use super::{Access, FenceInfo, FenceState, SyncFileInfo};
use crate::{producer, Error, Result};

/// How to tell the kernel's stub fence from a real, signalled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StubSignature {
    timestamp_ns: Option<u64>,
}

impl StubSignature {
    /// Recognises the stub by its name only (enough up to 6.12; on 7.x a stub then reads as
    /// [`FenceState::Signalled`]).
    pub const fn names_only() -> Self {
        StubSignature { timestamp_ns: None }
    }

    /// Learns the stub's timestamp from a dma-buf this process allocates (dma-heap, udmabuf,
    /// then a DRM dumb buffer) and so knows never held a fence; names only when none can be had.
    pub fn calibrate() -> Self {
        match producer::fresh_dmabuf() {
            Ok(buf) => Self::from_fresh_dmabuf(buf.as_fd()).unwrap_or_else(|e| {
                tracing::debug!("stub calibration failed ({e}); recognising the stub by name");
                Self::names_only()
            }),
            Err(e) => {
                tracing::debug!("no dma-buf to calibrate the stub fence on ({e}); by name only");
                Self::names_only()
            }
        }
    }

    /// Learns the stub's timestamp from `dmabuf`, which must never have held a fence.
    pub fn from_fresh_dmabuf(dmabuf: BorrowedFd<'_>) -> Result<Self> {
        let info = super::dmabuf::export_one(dmabuf, Access::Read)?.info()?;
        match info.fences.as_slice() {
            [stub] if stub.status.is_done() => Ok(StubSignature {
                timestamp_ns: Some(stub.timestamp_ns),
            }),
            _ => Err(Error::Io {
                op: "stub calibration (buffer was fenced)",
                errno: rustix::io::Errno::BUSY,
            }),
        }
    }

    /// The stub's timestamp, once calibrated.
    pub fn timestamp_ns(&self) -> Option<u64> {
        self.timestamp_ns
    }

    /// Whether this one fence is the kernel's stub.
    pub fn is_stub(&self, fence: &FenceInfo) -> bool {
        fence.status.is_done()
            && (fence.driver == "stub" || Some(fence.timestamp_ns) == self.timestamp_ns)
    }

    /// What an export straight from a dma-buf means. (Classify before merging: a merge of
    /// signalled fences yields a fresh private stub that no longer carries the signature.)
    pub fn classify(&self, info: &SyncFileInfo) -> FenceState {
        if !info.status.is_done() {
            FenceState::Pending
        } else if info.fences.iter().all(|f| self.is_stub(f)) {
            FenceState::NoFence
        } else {
            FenceState::Signalled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::FenceStatus;

    fn fence(driver: &str, status: FenceStatus, ts: u64) -> FenceInfo {
        FenceInfo {
            driver: driver.into(),
            timeline: String::new(),
            status,
            timestamp_ns: ts,
        }
    }

    fn file(fences: Vec<FenceInfo>) -> SyncFileInfo {
        let status = if fences.iter().all(|f| f.status.is_done()) {
            FenceStatus::Signalled
        } else {
            FenceStatus::Pending
        };
        SyncFileInfo { status, fences }
    }

    #[test]
    fn stub_by_name_up_to_6_12() {
        let sig = StubSignature::names_only();
        assert_eq!(
            sig.classify(&file(vec![fence("stub", FenceStatus::Signalled, 7)])),
            FenceState::NoFence
        );
        assert_eq!(
            sig.classify(&file(vec![fence("vgem", FenceStatus::Signalled, 9)])),
            FenceState::Signalled
        );
        assert_eq!(
            sig.classify(&file(vec![fence("vgem", FenceStatus::Pending, 0)])),
            FenceState::Pending
        );
    }

    #[test]
    fn stub_by_timestamp_on_7_x() {
        let sig = StubSignature {
            timestamp_ns: Some(1234),
        };
        let detached = |ts| fence("detached-driver", FenceStatus::Signalled, ts);
        assert_eq!(
            sig.classify(&file(vec![detached(1234)])),
            FenceState::NoFence
        );
        assert_eq!(
            sig.classify(&file(vec![detached(5678)])),
            FenceState::Signalled
        );
        // Uncalibrated, a detached stub can only be called signalled: the safe side.
        assert_eq!(
            StubSignature::names_only().classify(&file(vec![detached(1234)])),
            FenceState::Signalled
        );
    }

    #[test]
    fn a_pending_fence_is_never_the_stub() {
        let sig = StubSignature {
            timestamp_ns: Some(0),
        };
        assert_eq!(
            sig.classify(&file(vec![fence("stub", FenceStatus::Pending, 0)])),
            FenceState::Pending
        );
    }
}
