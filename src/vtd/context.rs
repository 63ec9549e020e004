//! Context entries: legacy (128-bit, per device: translation type, domain, second-stage table)
//! and scalable mode (256-bit: PASID directory, RID_PASID). VT-d spec 9.3 and 9.4.

use bitfield_struct::bitfield;

use super::cap::VtdConfig;
use super::fault::FaultReason;
use super::ids::DomainId;
use super::walk::{bits_from, SsTable, PAGE_SHIFT};

/// Size of a legacy context entry.
pub const LEGACY_CONTEXT_BYTES: u64 = 16;
/// Size of a scalable-mode context entry.
pub const SCALABLE_CONTEXT_BYTES: u64 = 32;

/// Legacy TT (Translation Type) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslationType {
    /// 00b: untranslated requests use the second-stage tables; device-TLB disabled.
    Translated,
    /// 01b: as 00b, with device-TLB (ATS) enabled (needs ECAP.DT).
    DeviceTlb,
    /// 10b: pass-through (needs ECAP.PT).
    PassThrough,
    /// 11b: reserved.
    Reserved,
}

impl TranslationType {
    /// From the 2-bit field.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => TranslationType::Translated,
            1 => TranslationType::DeviceTlb,
            2 => TranslationType::PassThrough,
            _ => TranslationType::Reserved,
        }
    }

    /// To the 2-bit field.
    pub const fn into_bits(self) -> u8 {
        self as u8
    }
}

/// Legacy context entry, bits 63:0.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct LegacyContextLo {
    /// P (Present) field (Bit 0).
    pub present: bool,
    /// FPD (Fault Processing Disable) field (Bit 1): qualified faults are not recorded.
    pub fpd: bool,
    /// TT (Translation Type) field (Bit 2~3).
    #[bits(2)]
    pub tt: TranslationType,
    #[bits(8)]
    __: u8,
    /// SSPTPTR (Second Stage Page Translation Pointer, SLPTPTR) field (Bit 12~63), in 4 KiB
    /// frames.
    #[bits(52)]
    pub ssptptr: u64,
}

/// Legacy context entry, bits 127:64.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct LegacyContextHi {
    /// AW (Address Width) field (Bit 64~66): 1 = 39-bit 3-level, 2 = 48-bit 4-level,
    /// 3 = 57-bit 5-level second-stage table; must be set in CAP.SAGAW.
    #[bits(3)]
    pub aw: u8,
    /// AVAIL (Available) field (Bit 67~70): ignored by hardware.
    #[bits(4)]
    pub avail: u8,
    #[bits(1)]
    __: u8,
    /// DID (Domain Identifier) field (Bit 72~87).
    pub did: u16,
    #[bits(40)]
    __: u64,
}

/// Reserved bits of a legacy context entry per word, before the address width is applied
/// (QEMU `VTD_CONTEXT_ENTRY_RSVD_LO` 0xff0 and `VTD_CONTEXT_ENTRY_RSVD_HI`).
pub const LEGACY_CONTEXT_RSVD: [u64; 2] = [0xff0, 0xffff_ffff_ff00_0080];

/// Reserved bits of a legacy context entry for host address width `haw`.
pub fn legacy_context_reserved(haw: u8) -> [u64; 2] {
    [
        LEGACY_CONTEXT_RSVD[0] | bits_from(haw),
        LEGACY_CONTEXT_RSVD[1],
    ]
}

/// Scalable-mode context entry, bits 63:0.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ScalableContext0 {
    /// P (Present) field (Bit 0).
    pub present: bool,
    /// FPD (Fault Processing Disable) field (Bit 1).
    pub fpd: bool,
    /// DTE (Device-TLB Enable) field (Bit 2): translation requests allowed (needs ECAP.DT).
    pub dte: bool,
    /// PASIDE (PASID Enable) field (Bit 3): requests with PASID allowed.
    pub paside: bool,
    /// PRE (Page Request Enable) field (Bit 4): page requests allowed (needs ECAP.PRS).
    pub pre: bool,
    #[bits(4)]
    __: u8,
    /// PDTS (PASID Directory Size) field (Bit 9~11): the directory has 2^(PDTS + 7) entries.
    #[bits(3)]
    pub pdts: u8,
    /// PASIDDIRPTR (PASID Directory Pointer) field (Bit 12~63), in 4 KiB frames.
    #[bits(52)]
    pub pasiddirptr: u64,
}

/// Scalable-mode context entry, bits 127:64 (bits 255:128 are reserved).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct ScalableContext1 {
    /// RID_PASID (Requester ID to PASID) field (Bit 64~83): the PASID used for requests
    /// without PASID.
    #[bits(20)]
    pub rid_pasid: u32,
    /// RID_PRIV (Requester ID to Privilege) field (Bit 84): requests without PASID are
    /// supervisor requests (needs ECAP.SRS).
    pub rid_priv: bool,
    #[bits(43)]
    __: u64,
}

/// Reserved bits of a scalable-mode context entry per word, before the address width and the
/// unit's features are applied (QEMU `VTD_SM_CONTEXT_ENTRY_RSVD_VAL0/1`; words 2-3 reserved).
pub const SCALABLE_CONTEXT_RSVD: [u64; 4] = [0x1e0, 0xffff_ffff_ffe0_0000, u64::MAX, u64::MAX];

/// Reserved bits of a scalable-mode context entry for `config`: fields of features the unit
/// does not advertise are reserved too.
pub fn scalable_context_reserved(config: &VtdConfig) -> [u64; 4] {
    let mut rsvd = SCALABLE_CONTEXT_RSVD;
    rsvd[0] |= bits_from(config.mgaw);
    let unsupported = ScalableContext0::new()
        .with_dte(!config.dt)
        .with_paside(config.pasid_bits == 0)
        .with_pre(!config.prs);
    rsvd[0] |= unsupported.into_bits();
    rsvd[1] |= ScalableContext1::new()
        .with_rid_priv(!config.srs)
        .into_bits();
    rsvd
}

/// A legacy context entry, checked: what translation needs from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyContext {
    /// Domain of the device.
    pub did: DomainId,
    /// FPD.
    pub fpd: bool,
    /// The second-stage table, or `None` for pass-through.
    pub table: Option<SsTable>,
}

/// A legacy context entry as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyContextEntry {
    /// Bits 63:0.
    pub lo: LegacyContextLo,
    /// Bits 127:64.
    pub hi: LegacyContextHi,
}

/// Second-stage table depth and input width for an AW field value, if the unit supports it.
pub fn second_stage_geometry(aw: u8, config: &VtdConfig) -> Option<(u8, u8)> {
    let supported = (1..=3).contains(&aw) && config.sagaw & (1 << aw) != 0;
    // Computed only for a supported AW: any u8 may come in.
    supported.then(|| (aw + 2, (30 + 9 * aw).min(config.mgaw)))
}

impl LegacyContextEntry {
    /// From the two words.
    pub fn from_words(lo: u64, hi: u64) -> Self {
        LegacyContextEntry {
            lo: LegacyContextLo::from_bits(lo),
            hi: LegacyContextHi::from_bits(hi),
        }
    }

    /// Checks the entry (LCT conditions: present, reserved bits, TT and AW programming).
    pub fn check(self, rsvd: &[u64; 2], config: &VtdConfig) -> Result<LegacyContext, FaultReason> {
        if !self.lo.present() {
            return Err(FaultReason::ContextEntryNotPresent);
        }
        if self.lo.into_bits() & rsvd[0] != 0 || self.hi.into_bits() & rsvd[1] != 0 {
            return Err(FaultReason::ContextEntryReserved);
        }
        let did = DomainId(self.hi.did());
        let fpd = self.lo.fpd();
        let translated = match self.lo.tt() {
            TranslationType::Translated => true,
            TranslationType::DeviceTlb if config.dt => true,
            TranslationType::PassThrough if config.pt => false,
            _ => return Err(FaultReason::ContextEntryInvalid),
        };
        if !translated {
            return Ok(LegacyContext {
                did,
                fpd,
                table: None,
            });
        }
        let (levels, width) =
            second_stage_geometry(self.hi.aw(), config).ok_or(FaultReason::ContextEntryInvalid)?;
        let table = SsTable {
            root: self.lo.ssptptr() << PAGE_SHIFT,
            levels,
            width,
            ad: false,
            exec: false,
        };
        Ok(LegacyContext {
            did,
            fpd,
            table: Some(table),
        })
    }
}

/// A scalable-mode context entry, checked: what translation needs from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalableContext {
    /// FPD.
    pub fpd: bool,
    /// PASIDE.
    pub pasid_enable: bool,
    /// PRE: the device's page requests may be queued (VT-d spec 7.5).
    pub page_request_enable: bool,
    /// Address of the PASID directory.
    pub pasid_dir: u64,
    /// Number of PASID directory entries (2^(PDTS + 7)).
    pub pasid_dir_entries: u32,
    /// RID_PASID.
    pub rid_pasid: u32,
    /// RID_PRIV.
    pub rid_priv: bool,
}

/// A scalable-mode context entry as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalableContextEntry {
    /// The four 64-bit words.
    pub words: [u64; 4],
}

impl ScalableContextEntry {
    /// FPD, meaningful even when P is clear.
    pub fn fpd(&self) -> bool {
        ScalableContext0::from_bits(self.words[0]).fpd()
    }

    /// Checks the entry (SCT conditions: present, reserved bits).
    pub fn check(&self, rsvd: &[u64; 4]) -> Result<ScalableContext, FaultReason> {
        let w0 = ScalableContext0::from_bits(self.words[0]);
        let w1 = ScalableContext1::from_bits(self.words[1]);
        if !w0.present() {
            return Err(FaultReason::SmContextEntryNotPresent);
        }
        if self
            .words
            .iter()
            .zip(rsvd)
            .any(|(word, mask)| word & mask != 0)
        {
            return Err(FaultReason::SmContextEntryReserved);
        }
        Ok(ScalableContext {
            fpd: w0.fpd(),
            pasid_enable: w0.paside(),
            page_request_enable: w0.pre(),
            pasid_dir: w0.pasiddirptr() << PAGE_SHIFT,
            pasid_dir_entries: 1 << (u32::from(w0.pdts()) + 7),
            rid_pasid: w1.rid_pasid(),
            rid_priv: w1.rid_priv(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserved_masks_pinned_to_qemu() {
        // QEMU: VTD_CONTEXT_ENTRY_RSVD_LO(aw) = 0xff0 | ~HAW; RSVD_HI = 0xffffffffff000080.
        assert_eq!(
            legacy_context_reserved(48),
            [0xffff_0000_0000_0ff0, 0xffff_ffff_ff00_0080]
        );
        // QEMU: VTD_SM_CONTEXT_ENTRY_RSVD_VAL0(aw) = 0x1e0 | ~HAW; VAL1 = 0xffffffffffe00000.
        let full = scalable_context_reserved(&VtdConfig::default());
        assert_eq!(
            full,
            [
                0xffff_0000_0000_01e0,
                0xffff_ffff_ffe0_0000,
                u64::MAX,
                u64::MAX
            ]
        );
        let bare = VtdConfig {
            dt: false,
            prs: false,
            srs: false,
            pasid_bits: 0,
            ..VtdConfig::default()
        };
        assert_eq!(
            scalable_context_reserved(&bare)[0] & 0x1c,
            0x1c,
            "DTE, PASIDE, PRE reserved"
        );
        assert_eq!(
            scalable_context_reserved(&bare)[1] & (1 << 20),
            1 << 20,
            "RID_PRIV reserved"
        );
    }

    #[test]
    fn test_field_positions_match_spec_bits() {
        assert_eq!(
            LegacyContextHi::new().with_did(0xabcd).into_bits(),
            0xabcd << 8
        );
        assert_eq!(
            LegacyContextLo::new()
                .with_tt(TranslationType::PassThrough)
                .into_bits(),
            8
        );
        assert_eq!(ScalableContext0::new().with_pdts(7).into_bits(), 7 << 9);
        assert_eq!(
            ScalableContext1::new().with_rid_priv(true).into_bits(),
            1 << 20
        );
    }

    #[test]
    fn test_legacy_check_tt_and_aw() {
        let config = VtdConfig::default();
        let rsvd = legacy_context_reserved(config.mgaw);
        let lo = LegacyContextLo::new().with_present(true).with_ssptptr(0x42);
        let hi = LegacyContextHi::new().with_aw(2).with_did(7);
        let ok = LegacyContextEntry { lo, hi }.check(&rsvd, &config).unwrap();
        assert_eq!(
            ok.table.unwrap(),
            SsTable {
                root: 0x42000,
                levels: 4,
                width: 48,
                ad: false,
                exec: false
            }
        );
        assert_eq!(ok.did, DomainId(7));
        let bad_aw = LegacyContextEntry {
            lo,
            hi: hi.with_aw(3),
        }
        .check(&rsvd, &config);
        assert_eq!(
            bad_aw,
            Err(FaultReason::ContextEntryInvalid),
            "SAGAW 0b0110 lacks 5-level"
        );
        let three = LegacyContextEntry {
            lo,
            hi: hi.with_aw(1),
        }
        .check(&rsvd, &config)
        .unwrap();
        assert_eq!(
            (three.table.unwrap().levels, three.table.unwrap().width),
            (3, 39)
        );
        let tt3 = LegacyContextEntry {
            lo: lo.with_tt(TranslationType::Reserved),
            hi,
        };
        assert_eq!(
            tt3.check(&rsvd, &config),
            Err(FaultReason::ContextEntryInvalid)
        );
        let pt = LegacyContextEntry {
            lo: lo.with_tt(TranslationType::PassThrough),
            hi,
        };
        assert_eq!(pt.check(&rsvd, &config).unwrap().table, None);
    }
}
