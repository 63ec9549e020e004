//! PASID directory entries (64-bit) and scalable-mode PASID table entries (512-bit): per PASID,
//! the translation type (PGTT), domain and first-/second-stage tables. VT-d spec 9.5 and 9.6.

use bitfield_struct::bitfield;

use super::cap::VtdConfig;
use super::context::second_stage_geometry;
use super::fault::FaultReason;
use super::ids::DomainId;
use super::walk::{bits_from, FsFlags, FsTable, SsTable, PAGE_SHIFT};

/// log2 of the PASID table entries one directory entry covers (Linux `PASID_PDE_SHIFT`).
pub const PASID_PDE_SHIFT: u32 = 6;
/// Size of a PASID directory entry.
pub const PASID_DIR_ENTRY_BYTES: u64 = 8;
/// Size of a PASID table entry.
pub const PASID_ENTRY_BYTES: u64 = 64;

/// Directory index of `pasid`.
pub const fn dir_index(pasid: u32) -> u64 {
    (pasid >> PASID_PDE_SHIFT) as u64
}

/// Index of `pasid` in its PASID table.
pub const fn table_index(pasid: u32) -> u64 {
    (pasid & ((1 << PASID_PDE_SHIFT) - 1)) as u64
}

/// A scalable-mode PASID directory entry.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidDirEntry {
    /// P (Present) field (Bit 0).
    pub present: bool,
    /// FPD (Fault Processing Disable) field (Bit 1).
    pub fpd: bool,
    #[bits(10)]
    __: u16,
    /// SMPTBLPTR (Scalable-Mode PASID Table Pointer) field (Bit 12~63), in 4 KiB frames.
    #[bits(52)]
    pub smptblptr: u64,
}

/// Reserved bits of a PASID directory entry before the address width is applied (bits 11:2).
pub const PASID_DIR_RSVD: u64 = 0xffc;

/// Reserved bits of a PASID directory entry for host address width `haw`.
pub fn pasid_dir_reserved(haw: u8) -> u64 {
    PASID_DIR_RSVD | bits_from(haw)
}

/// PGTT (PASID Granular Translation Type) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pgtt {
    /// 001b: first-stage translation only.
    FirstStage,
    /// 010b: second-stage translation only.
    SecondStage,
    /// 011b: nested (first stage, then second stage).
    Nested,
    /// 100b: pass-through.
    PassThrough,
    /// 000b, 101b-111b: reserved.
    Reserved(u8),
}

impl Pgtt {
    /// From the 3-bit field.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            1 => Pgtt::FirstStage,
            2 => Pgtt::SecondStage,
            3 => Pgtt::Nested,
            4 => Pgtt::PassThrough,
            other => Pgtt::Reserved(other),
        }
    }

    /// To the 3-bit field.
    pub const fn into_bits(self) -> u8 {
        match self {
            Pgtt::FirstStage => 1,
            Pgtt::SecondStage => 2,
            Pgtt::Nested => 3,
            Pgtt::PassThrough => 4,
            Pgtt::Reserved(bits) => bits & 7,
        }
    }
}

/// Scalable-mode PASID table entry, bits 63:0.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntry0 {
    /// P (Present) field (Bit 0).
    pub present: bool,
    /// FPD (Fault Processing Disable) field (Bit 1).
    pub fpd: bool,
    /// AW (Address Width) field (Bit 2~4): second-stage depth, as in a legacy context entry.
    #[bits(3)]
    pub aw: u8,
    /// SSEE (Second Stage Execute Enable) field (Bit 5): honour second-stage X bits.
    pub ssee: bool,
    /// PGTT (PASID Granular Translation Type) field (Bit 6~8).
    #[bits(3)]
    pub pgtt: Pgtt,
    /// SSADE (Second Stage Accessed/Dirty Enable) field (Bit 9) (needs ECAP.SSADS).
    pub ssade: bool,
    #[bits(2)]
    __: u8,
    /// SSPTPTR (Second Stage Page Table Pointer) field (Bit 12~63), in 4 KiB frames.
    #[bits(52)]
    pub ssptptr: u64,
}

/// Scalable-mode PASID table entry, bits 127:64.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntry1 {
    /// DID (Domain Identifier) field (Bit 64~79).
    pub did: u16,
    #[bits(7)]
    __: u8,
    /// PWSNP (Page-Walk Snoop) field (Bit 87); not modelled.
    pub pwsnp: bool,
    /// PGSNP (Page Snoop) field (Bit 88); not modelled.
    pub pgsnp: bool,
    /// CD (Cache Disable) field (Bit 89); not modelled.
    pub cd: bool,
    /// EMTE (Extended Memory Type Enable) field (Bit 90); not modelled.
    pub emte: bool,
    /// EMT (Extended Memory Type) field (Bit 91~93); not modelled.
    #[bits(3)]
    pub emt: u8,
    /// PWT (Page-level Write Through) field (Bit 94); not modelled.
    pub pwt: bool,
    /// PCD (Page-level Cache Disable) field (Bit 95); not modelled.
    pub pcd: bool,
    /// PAT (Page Attribute Table) field (Bit 96~127); not modelled.
    pub pat: u32,
}

/// Scalable-mode PASID table entry, bits 191:128 (bits 511:192 are reserved).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct PasidEntry2 {
    /// SRE (Supervisor Request Enable) field (Bit 128) (needs ECAP.SRS).
    pub sre: bool,
    /// ERE (Execute Requests Enable) field (Bit 129) (needs ECAP.ERS).
    pub ere: bool,
    /// FSPM (First Stage Paging Mode) field (Bit 130~131): 00b 4-level, 01b 5-level.
    #[bits(2)]
    pub fspm: u8,
    /// WPE (Write Protect Enable) field (Bit 132): supervisor writes honour R/W.
    pub wpe: bool,
    /// NXE (No Execute Enable) field (Bit 133), from VT-d 3.0; XD is always honoured now, so
    /// the bit is tolerated and ignored (older Linux sets it).
    pub nxe: bool,
    /// SMEP (Supervisor Mode Execute Prevention) field (Bit 134).
    pub smep: bool,
    /// EAFE (Extended Accessed Flag Enable) field (Bit 135) (needs ECAP.EAFS).
    pub eafe: bool,
    #[bits(4)]
    __: u8,
    /// FSPTPTR (First Stage Page Table Pointer) field (Bit 140~191), in 4 KiB frames.
    #[bits(52)]
    pub fsptptr: u64,
}

/// Reserved bits of a PASID table entry per word, before the address width and the unit's
/// features are applied: bits 11:10, 86:80, 139:136 and everything from bit 192 up.
pub const PASID_ENTRY_RSVD: [u64; 8] = [
    0xc00,
    0x7f_0000,
    0xf00,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
    u64::MAX,
];

/// Reserved bits of a PASID table entry for `config`: pointers above the host address width
/// and fields of features the unit does not advertise (SSADE, SRE, ERE, EAFE).
pub fn pasid_entry_reserved(config: &VtdConfig) -> [u64; 8] {
    let mut rsvd = PASID_ENTRY_RSVD;
    let above = bits_from(config.mgaw);
    rsvd[0] |= above | PasidEntry0::new().with_ssade(!config.slads).into_bits();
    rsvd[2] |= above
        | PasidEntry2::new()
            .with_sre(!config.srs)
            .with_ere(!config.ers)
            .with_eafe(!config.ecap().eafs())
            .into_bits();
    rsvd
}

/// A PASID table entry, checked: everything translation and the caches need from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidParams {
    /// Domain.
    pub did: DomainId,
    /// FPD.
    pub fpd: bool,
    /// Translation type.
    pub pgtt: Pgtt,
    /// First-stage table (first-stage and nested).
    pub first: Option<FsTable>,
    /// Second-stage table (second-stage and nested).
    pub second: Option<SsTable>,
    /// SRE, WPE, ERE, SMEP, EAFE.
    pub flags: FsFlags,
}

/// A PASID table entry as read (the eight 64-bit words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasidEntry {
    /// Words 0-7.
    pub words: [u64; 8],
}

impl PasidEntry {
    /// FPD, meaningful even when P is clear.
    pub fn fpd(&self) -> bool {
        PasidEntry0::from_bits(self.words[0]).fpd()
    }

    /// Checks the entry (SPT conditions: present, reserved bits, PGTT/AW/FSPM programming).
    pub fn check(&self, rsvd: &[u64; 8], config: &VtdConfig) -> Result<PasidParams, FaultReason> {
        let w0 = PasidEntry0::from_bits(self.words[0]);
        let w1 = PasidEntry1::from_bits(self.words[1]);
        let w2 = PasidEntry2::from_bits(self.words[2]);
        if !w0.present() {
            return Err(FaultReason::SmPasidEntryNotPresent);
        }
        if self
            .words
            .iter()
            .zip(rsvd)
            .any(|(word, mask)| word & mask != 0)
        {
            return Err(FaultReason::SmPasidEntryReserved);
        }
        let pgtt = w0.pgtt();
        let (uses_first, uses_second) = match pgtt {
            Pgtt::FirstStage if config.flts => (true, false),
            Pgtt::SecondStage if config.slts => (false, true),
            Pgtt::Nested if config.nest => (true, true),
            Pgtt::PassThrough if config.pt => (false, false),
            _ => return Err(FaultReason::SmPasidEntryInvalid),
        };
        let flags = FsFlags {
            sre: w2.sre(),
            wpe: w2.wpe(),
            ere: w2.ere(),
            smep: w2.smep(),
            eafe: w2.eafe(),
        };
        let first = if uses_first {
            let five_level = match w2.fspm() {
                0 => false,
                1 if config.fl_5level => true,
                _ => return Err(FaultReason::SmPasidEntryInvalid),
            };
            Some(FsTable {
                root: w2.fsptptr() << PAGE_SHIFT,
                five_level,
                flags,
            })
        } else {
            None
        };
        let second = if uses_second {
            let (levels, width) =
                second_stage_geometry(w0.aw(), config).ok_or(FaultReason::SmPasidEntryInvalid)?;
            Some(SsTable {
                root: w0.ssptptr() << PAGE_SHIFT,
                levels,
                width,
                ad: w0.ssade(),
                exec: w0.ssee(),
            })
        } else {
            None
        };
        Ok(PasidParams {
            did: DomainId(w1.did()),
            fpd: w0.fpd(),
            pgtt,
            first,
            second,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_field_positions_match_linux_accessors() {
        // Linux pasid.h: DID bits 64~79, SLPTPTR 12~63, AW 2~4, PGTT 6~8, SSADE 9, SRE 128,
        // WPE 132, PWSNP 87, PGSNP 88, FLPTR 140~191, FLPM 130~131, EAFE 135.
        assert_eq!(PasidEntry0::new().with_aw(7).into_bits(), 0b111 << 2);
        assert_eq!(
            PasidEntry0::new().with_pgtt(Pgtt::PassThrough).into_bits(),
            4 << 6
        );
        assert_eq!(PasidEntry0::new().with_ssade(true).into_bits(), 1 << 9);
        assert_eq!(
            PasidEntry1::new().with_pwsnp(true).into_bits(),
            1 << (87 - 64)
        );
        assert_eq!(
            PasidEntry1::new().with_pgsnp(true).into_bits(),
            1 << (88 - 64)
        );
        assert_eq!(
            PasidEntry2::new().with_wpe(true).into_bits(),
            1 << (132 - 128)
        );
        assert_eq!(PasidEntry2::new().with_fspm(1).into_bits(), 1 << 2);
        assert_eq!(PasidEntry2::new().with_eafe(true).into_bits(), 1 << 7);
        assert_eq!(PasidEntry2::new().with_fsptptr(1).into_bits(), 1 << 12);
        assert_eq!(PasidDirEntry::new().with_smptblptr(5).into_bits(), 5 << 12);
    }

    #[test]
    fn test_reserved_masks() {
        let rsvd = pasid_entry_reserved(&VtdConfig::default());
        assert_eq!(rsvd[0], 0xffff_0000_0000_0c00);
        assert_eq!(rsvd[1], 0x7f_0000);
        assert_eq!(
            rsvd[2], 0xffff_0000_0000_0f80,
            "EAFE reserved: ECAP.EAFS is clear"
        );
        assert_eq!(pasid_dir_reserved(48), 0xffff_0000_0000_0ffc);
    }

    #[test]
    fn test_check_rejects_bad_programming() {
        let config = VtdConfig::default();
        let rsvd = pasid_entry_reserved(&config);
        let base = PasidEntry0::new().with_present(true).with_aw(2);
        let entry = |w0: PasidEntry0, w2: PasidEntry2| PasidEntry {
            words: [w0.into_bits(), 5, w2.into_bits(), 0, 0, 0, 0, 0],
        };
        let ss = entry(base.with_pgtt(Pgtt::SecondStage), PasidEntry2::new())
            .check(&rsvd, &config)
            .unwrap();
        assert_eq!(ss.did, DomainId(5));
        assert_eq!(ss.second.unwrap().levels, 4);
        for bad in [0, 5, 6, 7] {
            let e = entry(base.with_pgtt(Pgtt::from_bits(bad)), PasidEntry2::new());
            assert_eq!(
                e.check(&rsvd, &config),
                Err(FaultReason::SmPasidEntryInvalid)
            );
        }
        let fspm3 = entry(
            base.with_pgtt(Pgtt::FirstStage),
            PasidEntry2::new().with_fspm(3),
        );
        assert_eq!(
            fspm3.check(&rsvd, &config),
            Err(FaultReason::SmPasidEntryInvalid)
        );
        let aw3 = entry(base.with_aw(3).with_pgtt(Pgtt::Nested), PasidEntry2::new());
        assert_eq!(
            aw3.check(&rsvd, &config),
            Err(FaultReason::SmPasidEntryInvalid)
        );
        let mut high = entry(base.with_pgtt(Pgtt::PassThrough), PasidEntry2::new());
        high.words[5] = 1;
        assert_eq!(
            high.check(&rsvd, &config),
            Err(FaultReason::SmPasidEntryReserved)
        );
    }
}
