//! What the modelled remapping unit supports: one configuration, and the Capability (CAP) and
//! Extended Capability (ECAP) registers that advertise it. VT-d spec 11.4.2 and 11.4.3.

use bitfield_struct::bitfield;

use super::walk::bits_from;

/// Capability Register (CAP_REG, offset 0x08).
#[bitfield(u64)]
pub struct Cap {
    /// ND: Number of Domains supported, 2^(4 + 2*ND).
    #[bits(3)]
    pub nd: u8,
    /// AFL: Advanced Fault Logging.
    pub afl: bool,
    /// RWBF: Required Write-Buffer Flushing.
    pub rwbf: bool,
    /// PLMR: Protected Low-Memory Region.
    pub plmr: bool,
    /// PHMR: Protected High-Memory Region.
    pub phmr: bool,
    /// CM: Caching Mode (not-present and erroneous entries may be cached: software
    /// invalidates after every change, which is what lets a vIOMMU see every change).
    pub cm: bool,
    /// SAGAW: Supported Adjusted Guest Address Widths (bit 1: 39-bit 3-level, bit 2: 48-bit
    /// 4-level, bit 3: 57-bit 5-level).
    #[bits(5)]
    pub sagaw: u8,
    #[bits(3)]
    __: u8,
    /// MGAW: Maximum Guest Address Width, minus one.
    #[bits(6)]
    pub mgaw: u8,
    /// ZLR: Zero Length Read.
    pub zlr: bool,
    #[bits(1)]
    __: u8,
    /// FRO: Fault-recording Register Offset, in 16-byte units.
    #[bits(10)]
    pub fro: u16,
    /// SLLPS: Second-stage Large Page Support (bit 0: 2 MiB, bit 1: 1 GiB).
    #[bits(4)]
    pub sllps: u8,
    #[bits(1)]
    __: u8,
    /// PSI: Page Selective Invalidation.
    pub psi: bool,
    /// NFR: Number of Fault-recording Registers, minus one.
    #[bits(8)]
    pub nfr: u8,
    /// MAMV: Maximum Address Mask Value for page-selective invalidation.
    #[bits(6)]
    pub mamv: u8,
    /// DWD: Write Draining.
    pub dwd: bool,
    /// DRD: Read Draining.
    pub drd: bool,
    /// FL1GP (FS1GP): First-stage 1-GByte Page Support.
    pub fl1gp: bool,
    #[bits(2)]
    __: u8,
    /// PI: Posted Interrupts.
    pub pi: bool,
    /// FL5LP (FS5LP): First-stage 5-level Paging Support.
    pub fl5lp: bool,
    #[bits(1)]
    __: u8,
    /// ESIRTPS: Enhanced Set Interrupt Remap Table Pointer Support.
    pub esirtps: bool,
    /// ESRTPS: Enhanced Set Root Table Pointer Support.
    pub esrtps: bool,
}

/// Extended Capability Register (ECAP_REG, offset 0x10).
#[bitfield(u64)]
pub struct Ecap {
    /// C: Page-walk Coherency.
    pub c: bool,
    /// QI: Queued Invalidation support.
    pub qi: bool,
    /// DT: Device-TLB support (ATS).
    pub dt: bool,
    /// IR: Interrupt Remapping support.
    pub ir: bool,
    /// EIM: Extended Interrupt Mode.
    pub eim: bool,
    #[bits(1)]
    __: u8,
    /// PT: Pass Through.
    pub pt: bool,
    /// SC: Snoop Control.
    pub sc: bool,
    /// IRO: IOTLB Register Offset, in 16-byte units.
    #[bits(10)]
    pub iro: u16,
    #[bits(2)]
    __: u8,
    /// MHMV: Maximum Handle Mask Value.
    #[bits(4)]
    pub mhmv: u8,
    #[bits(2)]
    __: u8,
    /// NEST: Nested Translation support.
    pub nest: bool,
    #[bits(2)]
    __: u8,
    /// PRS: Page Request Support.
    pub prs: bool,
    /// ERS: Execute Request Support.
    pub ers: bool,
    /// SRS: Supervisor Request Support.
    pub srs: bool,
    #[bits(1)]
    __: u8,
    /// NWFS: No Write Flag Support.
    pub nwfs: bool,
    /// EAFS: Extended Accessed Flag Support.
    pub eafs: bool,
    /// PSS: PASID Size Supported, minus one.
    #[bits(5)]
    pub pss: u8,
    /// PASID: Process Address Space ID support.
    pub pasid: bool,
    /// DIT: Device-TLB Invalidation Throttle.
    pub dit: bool,
    /// PDS: Page-request Drain Support.
    pub pds: bool,
    /// SMTS: Scalable Mode Translation Support.
    pub smts: bool,
    /// VCS: Virtual Command Support.
    pub vcs: bool,
    /// SLADS (SSADS): Second-stage Accessed/Dirty Support.
    pub slads: bool,
    /// SLTS (SSTS): Second-stage Translation Support.
    pub slts: bool,
    /// FLTS (FSTS): First-stage Translation Support.
    pub flts: bool,
    /// SMPWC: Scalable-Mode Page-walk Coherency.
    pub smpwc: bool,
    /// RPS: RID_PASID Support.
    pub rps: bool,
    #[bits(14)]
    __: u16,
}

/// Offset of the fault recording registers (FRO * 16).
pub const FRCD_OFFSET: u64 = 0x200;
/// Offset of the IOTLB registers (IRO * 16): IVA at +0, IOTLB at +8.
pub const IOTLB_OFFSET: u64 = 0x100;

/// What a remapping unit supports. Defaults are what Linux needs for SVA (see ENVIRONMENT.md):
/// scalable mode with first- and second-stage, nesting, pass-through, 20-bit PASIDs, device-TLB,
/// page requests with drain, caching mode, 48-bit MGAW with 4- and 5-level tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdConfig {
    /// MGAW: maximum guest address width in bits (39, 48 or 57).
    pub mgaw: u8,
    /// SAGAW bit mask (bit 1: 3-level, bit 2: 4-level, bit 3: 5-level second-stage tables).
    pub sagaw: u8,
    /// Caching mode.
    pub caching_mode: bool,
    /// Number of fault recording registers (1..=256).
    pub fault_records: u16,
    /// Second-stage 2 MiB pages.
    pub sl_2m: bool,
    /// Second-stage 1 GiB pages.
    pub sl_1g: bool,
    /// First-stage 1 GiB pages.
    pub fl_1g: bool,
    /// First-stage 5-level paging.
    pub fl_5level: bool,
    /// Page-selective invalidation with address masks up to `mamv`.
    pub psi: bool,
    /// Maximum address mask value.
    pub mamv: u8,
    /// Read/write draining.
    pub draining: bool,
    /// Scalable mode.
    pub smts: bool,
    /// PASID support with this many bits (1..=20), or 0 for none.
    pub pasid_bits: u8,
    /// First-stage translation.
    pub flts: bool,
    /// Second-stage translation.
    pub slts: bool,
    /// Nested translation.
    pub nest: bool,
    /// Pass-through.
    pub pt: bool,
    /// Queued invalidation.
    pub qi: bool,
    /// Device-TLB (ATS).
    pub dt: bool,
    /// Page requests.
    pub prs: bool,
    /// Page-request drain.
    pub pds: bool,
    /// No Write Flag support.
    pub nwfs: bool,
    /// Scalable-mode page-walk coherency.
    pub smpwc: bool,
    /// Second-stage accessed/dirty.
    pub slads: bool,
    /// Execute requests.
    pub ers: bool,
    /// Supervisor requests.
    pub srs: bool,
}

impl Default for VtdConfig {
    fn default() -> Self {
        VtdConfig {
            mgaw: 48,
            sagaw: 0b0110,
            caching_mode: true,
            fault_records: 8,
            sl_2m: true,
            sl_1g: true,
            fl_1g: true,
            fl_5level: true,
            psi: true,
            mamv: 18,
            draining: true,
            smts: true,
            pasid_bits: 20,
            flts: true,
            slts: true,
            nest: true,
            pt: true,
            qi: true,
            dt: true,
            prs: true,
            pds: true,
            nwfs: true,
            smpwc: true,
            slads: true,
            ers: true,
            srs: true,
        }
    }
}

impl VtdConfig {
    /// The CAP register value.
    pub fn cap(&self) -> Cap {
        Cap::new()
            .with_nd(6)
            .with_cm(self.caching_mode)
            .with_sagaw(self.sagaw)
            .with_mgaw(self.mgaw - 1)
            .with_fro((FRCD_OFFSET / 16) as u16)
            .with_sllps(u8::from(self.sl_2m) | (u8::from(self.sl_1g) << 1))
            .with_psi(self.psi)
            .with_nfr((self.fault_records.clamp(1, 256) - 1) as u8)
            .with_mamv(self.mamv)
            .with_dwd(self.draining)
            .with_drd(self.draining)
            .with_fl1gp(self.fl_1g)
            .with_fl5lp(self.fl_5level)
    }

    /// The ECAP register value.
    pub fn ecap(&self) -> Ecap {
        Ecap::new()
            .with_c(true)
            .with_qi(self.qi)
            .with_dt(self.dt)
            .with_pt(self.pt)
            .with_iro((IOTLB_OFFSET / 16) as u16)
            .with_mhmv(0xf)
            .with_nest(self.nest)
            .with_prs(self.prs)
            .with_ers(self.ers)
            .with_srs(self.srs)
            .with_nwfs(self.nwfs)
            .with_pss(self.pasid_bits.saturating_sub(1))
            .with_pasid(self.pasid_bits > 0)
            .with_pds(self.pds)
            .with_smts(self.smts)
            .with_slads(self.slads)
            .with_slts(self.slts)
            .with_flts(self.flts)
            .with_smpwc(self.smpwc)
    }

    /// Mask of address bits the hardware can produce or accept (below MGAW).
    pub fn address_mask(&self) -> u64 {
        !bits_from(self.mgaw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_config_advertises_what_linux_sva_needs() {
        let (cap, ecap) = (VtdConfig::default().cap(), VtdConfig::default().ecap());
        assert!(ecap.smts() && ecap.pasid() && ecap.flts() && ecap.prs() && ecap.pds());
        assert!(ecap.smpwc() && ecap.nwfs() && ecap.qi() && ecap.dt());
        assert_eq!(ecap.pss(), 19);
        assert!(cap.fl1gp() && cap.fl5lp() && cap.cm() && cap.psi());
        assert_eq!(cap.mgaw(), 47);
        assert_eq!(u64::from(cap.fro()) * 16, FRCD_OFFSET);
        assert_eq!(u64::from(ecap.iro()) * 16, IOTLB_OFFSET);
        // Bit positions from the spec, checked against raw values.
        assert_eq!(ecap.into_bits() & (1 << 43), 1 << 43, "SMTS is bit 43");
        assert_eq!(ecap.into_bits() & (1 << 48), 1 << 48, "SMPWC is bit 48");
        assert_eq!(cap.into_bits() & (1 << 56), 1 << 56, "FL1GP is bit 56");
        assert_eq!((cap.into_bits() >> 16) & 0x3f, 47, "MGAW is bits 21:16");
    }
}
