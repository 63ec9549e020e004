//! The page request queue: page requests from devices (PCIe PRI) written as 256-bit page request
//! descriptors into a ring in guest memory, PQT advanced, PRS.PPR/PRO and the page request event;
//! requests that cannot be queued are answered by the unit itself. VT-d spec 7.5 (page request
//! handling), 7.5.1 (page request descriptor), 11.4.11 (PQH, PQT, PQA, PRS, PECTL).

use bitfield_struct::bitfield;

use super::ids::{Pasid, SourceId};
use super::regs::{
    PqOffset, Pqa, Prs, RegisterFile, DMAR_PQH_REG, DMAR_PQT_REG, PAGE_REQUEST_EVENT,
};
use super::request::{Access, Request};
use super::sink::{PageGroupResponse, PageResponseCode, VtdSink};
use super::walk::PAGE_SIZE;
use crate::mem::{Gpa, MemView};

/// Bytes in a quadword.
const QWORD: u64 = 8;
/// Bytes in a page request descriptor.
pub const PAGE_REQ_DESC_SIZE: u64 = 32;
/// Descriptor type of a page request (bits 7:0 of the first quadword).
pub const PAGE_REQ_TYPE: u8 = 1;
/// PRGI is 9 bits.
const PRG_INDEX_MASK: u16 = (1 << PageReqQw1::PRG_INDEX_BITS) - 1;

/// A page request as a device sends it (PCIe Page Request Message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Requester ID.
    pub source: SourceId,
    /// PASID of the request, if it carries one.
    pub pasid: Option<Pasid>,
    /// Page address (bits 11:0 are ignored).
    pub addr: u64,
    /// Read access requested.
    pub read: bool,
    /// Write access requested.
    pub write: bool,
    /// Execute access requested (only with a PASID).
    pub exec: bool,
    /// Privileged-mode access requested (only with a PASID).
    pub privileged: bool,
    /// LPIG: last request of its page request group; the group expects a response.
    pub last_in_group: bool,
    /// PRGI: page request group index (9 bits; higher bits are dropped).
    pub prg_index: u16,
    /// Private data to be echoed in the response.
    pub private_data: Option<[u64; 2]>,
}

impl PageRequest {
    /// A stop marker (last in group, neither read nor write) needs no response (PCIe 10.4.1.2).
    pub fn is_stop_marker(&self) -> bool {
        self.last_in_group && !self.read && !self.write
    }

    /// The request as the remapping hardware checks and records it: a fault record for a page
    /// request carries its page address, and execute/privileged only with a PASID.
    pub fn as_request(&self) -> Request {
        let with_pasid = self.pasid.is_some();
        Request {
            source: self.source,
            pasid: self.pasid,
            addr: self.addr & !(PAGE_SIZE - 1),
            access: Access {
                read: self.read,
                write: self.write,
                exec: with_pasid && self.exec,
                privileged: with_pasid && self.privileged,
            },
        }
    }

    /// The response the unit gives itself to a request it cannot hand to software, if the
    /// request expects one.
    pub fn auto_response(&self, code: PageResponseCode) -> Option<PageGroupResponse> {
        (self.last_in_group && !self.is_stop_marker()).then_some(PageGroupResponse {
            source: self.source,
            pasid: self.pasid,
            prg_index: self.prg_index & PRG_INDEX_MASK,
            code,
            private_data: self.private_data,
        })
    }
}

/// What became of a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRequestOutcome {
    /// Written to the queue at this byte offset.
    Queued {
        /// Byte offset of the descriptor in the queue.
        offset: u64,
    },
    /// Not queued: the queue was full or had overflowed (PRS.PRO set), or its pointers or
    /// memory were unusable. A last-in-group request was answered with Success, so the device
    /// retries once software has made room.
    Overflow {
        /// Whether a page group response was sent.
        auto_response: bool,
    },
    /// Not queued: page requests are supported, but not for this device in the unit's present
    /// state (translation disabled, a legacy-mode or unusable root table, no valid scalable-mode
    /// context entry, or its PRE clear; all but the first are recorded as faults). A
    /// last-in-group request was answered with Invalid Request.
    Rejected {
        /// Whether a page group response was sent.
        auto_response: bool,
    },
    /// The unit does not support page requests (ECAP.PRS = 0): the message is an Unsupported
    /// Request for the transport to complete; nothing was recorded.
    Unsupported,
}

/// Page request descriptor, first quadword (7.5.1; Linux `struct page_req_dsc`).
#[bitfield(u64)]
pub struct PageReqQw0 {
    /// Descriptor type: 01h.
    #[bits(8)]
    pub kind: u8,
    /// PP: PASID present (bit 8).
    pub pasid_present: bool,
    /// PDP: private data present (bit 9): quadwords 2-3 hold it.
    pub priv_data_present: bool,
    #[bits(6)]
    __: u8,
    /// RID: requester-ID (bits 31:16).
    pub rid: u16,
    /// PASID (bits 51:32).
    #[bits(20)]
    pub pasid: u32,
    /// ER: execute requested (bit 52).
    pub exe_req: bool,
    /// PMR: privileged mode requested (bit 53).
    pub pm_req: bool,
    #[bits(10)]
    __: u16,
}

/// Page request descriptor, second quadword.
#[bitfield(u64)]
pub struct PageReqQw1 {
    /// RDR: read requested (bit 0).
    pub rd_req: bool,
    /// WRR: write requested (bit 1).
    pub wr_req: bool,
    /// LPIG: last page in group (bit 2).
    pub lpig: bool,
    /// PRGI: page request group index (bits 11:3).
    #[bits(9)]
    pub prg_index: u16,
    /// ADDR: page number (bits 63:12).
    #[bits(52)]
    pub addr: u64,
}

/// The 256-bit descriptor for a request.
pub fn page_req_desc(req: &PageRequest) -> [u64; 4] {
    let qw0 = PageReqQw0::new()
        .with_kind(PAGE_REQ_TYPE)
        .with_pasid_present(req.pasid.is_some())
        .with_priv_data_present(req.private_data.is_some())
        .with_rid(req.source.0)
        .with_pasid(req.pasid.map_or(0, |p| p.raw()))
        // Execute and privileged requests exist only in a PASID TLP prefix.
        .with_exe_req(req.pasid.is_some() && req.exec)
        .with_pm_req(req.pasid.is_some() && req.privileged);
    let qw1 = PageReqQw1::new()
        .with_rd_req(req.read)
        .with_wr_req(req.write)
        .with_lpig(req.last_in_group)
        .with_prg_index(req.prg_index & PRG_INDEX_MASK)
        .with_addr(req.addr >> PageReqQw1::ADDR_OFFSET);
    let [pd0, pd1] = req.private_data.unwrap_or_default();
    [qw0.into_bits(), qw1.into_bits(), pd0, pd1]
}

/// The queue as PQA describes it now.
fn geometry(regs: &RegisterFile) -> (u64, u64) {
    let pqa: Pqa = regs.load();
    (pqa.base(), PAGE_SIZE << pqa.pqs())
}

/// Sets PRS bits for a new condition, raising the page request event unless PPR or PRO was set
/// already (then it is no new interrupt condition, 7.5 / 11.4.11.5 PECTL).
fn report(regs: &mut RegisterFile, set: Prs, sink: &mut dyn VtdSink) {
    let before: Prs = regs.load();
    regs.store(Prs::from_bits(before.into_bits() | set.into_bits()));
    if !before.ppr() && !before.pro() {
        regs.raise_event(&PAGE_REQUEST_EVENT, sink);
    }
}

/// The request cannot be queued: PRO is set (it may already be) and a request that expects a
/// response gets Success, so that the device retries once software has drained the queue.
fn overflow(
    regs: &mut RegisterFile,
    req: &PageRequest,
    sink: &mut dyn VtdSink,
) -> PageRequestOutcome {
    report(regs, Prs::new().with_pro(true), sink);
    let response = req.auto_response(PageResponseCode::Success);
    if let Some(resp) = response {
        sink.page_group_response(resp);
    }
    PageRequestOutcome::Overflow {
        auto_response: response.is_some(),
    }
}

/// Queues a page request (the unit checked that page requests can be serviced): writes the
/// descriptor at PQT, advances PQT, sets PPR and raises the page request event per PECTL. A full
/// queue (PQT one descriptor behind PQH), a pending PRO, head or tail pointers outside the queue
/// and unusable queue memory all take the overflow path: nothing is written outside the queue.
pub fn submit(
    regs: &mut RegisterFile,
    view: &MemView,
    req: &PageRequest,
    sink: &mut dyn VtdSink,
) -> PageRequestOutcome {
    if regs.load::<Prs>().pro() {
        // While PRO is set, page requests are not queued (7.5): software drains the queue and
        // clears PRO first.
        return overflow(regs, req, sink);
    }
    let (base, size) = geometry(regs);
    let head = PqOffset::from_bits(regs.get(DMAR_PQH_REG)).bytes();
    let tail = PqOffset::from_bits(regs.get(DMAR_PQT_REG)).bytes();
    if head >= size || tail >= size {
        return overflow(regs, req, sink);
    }
    let next = (tail + PAGE_REQ_DESC_SIZE) % size;
    if next == head {
        return overflow(regs, req, sink);
    }
    let written = page_req_desc(req)
        .iter()
        .enumerate()
        .try_for_each(|(i, &qword)| {
            let at = base.checked_add(tail)?.checked_add(i as u64 * QWORD)?;
            view.write_u64(Gpa(at), qword).ok()
        });
    if written.is_none() {
        return overflow(regs, req, sink);
    }
    regs.set(DMAR_PQT_REG, PqOffset::from_bytes(next).into_bits());
    report(regs, Prs::new().with_ppr(true), sink);
    PageRequestOutcome::Queued { offset: tail }
}

/// After software wrote PRS: once PPR and PRO are both clear, a pending event is dropped.
pub fn prs_written(regs: &mut RegisterFile) {
    let prs: Prs = regs.load();
    if !prs.ppr() && !prs.pro() {
        regs.event_serviced(&PAGE_REQUEST_EVENT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pasid: Option<u32>, last: bool) -> PageRequest {
        PageRequest {
            source: SourceId::new(0, 4, 0),
            pasid: pasid.and_then(Pasid::new),
            addr: 0x7fff_1234_5fff,
            read: true,
            write: true,
            exec: true,
            privileged: false,
            last_in_group: last,
            prg_index: 0x1ab,
            private_data: None,
        }
    }

    #[test]
    fn test_descriptor_layout_matches_linux_page_req_dsc() {
        let [qw0, qw1, qw2, qw3] = page_req_desc(&request(Some(0x12345), true));
        assert_eq!(qw0 & 0xff, 1, "type");
        assert_eq!((qw0 >> 8) & 1, 1, "pasid_present");
        assert_eq!((qw0 >> 16) & 0xffff, 0x20, "rid");
        assert_eq!((qw0 >> 32) & 0xfffff, 0x12345, "pasid");
        assert_eq!((qw0 >> 52) & 1, 1, "exe_req");
        assert_eq!((qw0 >> 53) & 1, 0, "pm_req");
        assert_eq!(qw1 & 7, 0b111, "rd, wr, lpig");
        assert_eq!((qw1 >> 3) & 0x1ff, 0x1ab, "prg_index");
        assert_eq!(qw1 >> 12, 0x0007_fff1_2345, "addr");
        assert_eq!((qw2, qw3), (0, 0));
    }

    #[test]
    fn test_exec_and_privileged_need_a_pasid() {
        let mut req = request(None, false);
        req.privileged = true;
        let [qw0, ..] = page_req_desc(&req);
        assert_eq!(qw0 >> 52, 0);
        assert_eq!((qw0 >> 8) & 1, 0);
    }

    #[test]
    fn test_private_data_sets_pdp_and_fills_upper_quadwords() {
        let mut req = request(Some(1), true);
        req.private_data = Some([0x1111, 0x2222]);
        let [qw0, _, qw2, qw3] = page_req_desc(&req);
        assert_eq!((qw0 >> 9) & 1, 1);
        assert_eq!((qw2, qw3), (0x1111, 0x2222));
        assert_eq!(
            req.auto_response(PageResponseCode::Success)
                .unwrap()
                .private_data,
            Some([0x1111, 0x2222])
        );
    }

    #[test]
    fn test_auto_response_only_for_last_in_group_and_not_stop_markers() {
        assert!(request(Some(1), false)
            .auto_response(PageResponseCode::Success)
            .is_none());
        let mut stop = request(Some(1), true);
        stop.read = false;
        stop.write = false;
        assert!(stop.is_stop_marker());
        assert!(stop.auto_response(PageResponseCode::Success).is_none());
        let resp = request(Some(1), true)
            .auto_response(PageResponseCode::InvalidRequest)
            .unwrap();
        assert_eq!(
            (resp.prg_index, resp.code),
            (0x1ab, PageResponseCode::InvalidRequest)
        );
    }
}
