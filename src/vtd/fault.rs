//! Fault reasons: the architected codes a DMA-remapping fault records (FRCD_REG.FR).
//! VT-d spec 7.1.3 (legacy and scalable-mode fault conditions); strings follow Linux dmar.c.

use std::fmt;

/// A DMA-remapping fault reason code (FR field of a fault record).
///
/// Legacy-mode conditions use codes 0x01-0x0E, scalable-mode conditions 0x30-0x91. The names
/// follow the Linux `dma_remap_fault_reasons[]` / `dma_remap_sm_fault_reasons[]` strings and
/// QEMU's `VTDFaultReason`; the spec's current terms (first-/second-stage) are used in names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultReason {
    /// LRT.2: present bit in root entry is clear.
    RootEntryNotPresent = 0x01,
    /// LCT.2: present bit in context entry is clear.
    ContextEntryNotPresent = 0x02,
    /// LCT.4: invalid context entry (AW not in SAGAW, reserved or unsupported TT).
    ContextEntryInvalid = 0x03,
    /// LGN.2: input address above 2^min(AGAW, MGAW) - 1.
    AddressBeyondMgaw = 0x04,
    /// LGN.3: write to a page whose cumulative W is clear.
    WriteNotPermitted = 0x05,
    /// LGN.3: read from a page whose cumulative R is clear.
    ReadNotPermitted = 0x06,
    /// LSL.1/LSL.2: accessing a second-stage paging entry failed.
    PagingEntryInvalid = 0x07,
    /// LRT.1: accessing the root entry failed.
    RootTableInvalid = 0x08,
    /// LCT.1: accessing the context entry failed.
    ContextTableInvalid = 0x09,
    /// LRT.3: non-zero reserved field in a present root entry.
    RootEntryReserved = 0x0a,
    /// LCT.3: non-zero reserved field in a present context entry.
    ContextEntryReserved = 0x0b,
    /// LSL.3: non-zero reserved field in a present second-stage paging entry.
    PagingEntryReserved = 0x0c,
    /// LCT.5: request blocked by the context entry's TT field.
    ContextEntryTranslationType = 0x0d,
    /// LGN.4: output address in the interrupt address range (0xFEEx_xxxx).
    InterruptAddress = 0x0e,

    /// SRTA.1: invalid root table address.
    SmRootTableAddressInvalid = 0x30,
    /// SRTA.2: RTADDR_REG.TTM cannot serve the request: legacy (00b) for a request with
    /// PASID, or a mode the unit does not support (reserved 10b, abort-DMA 11b without
    /// ECAP.ADMS, scalable 01b without ECAP.SMTS). QEMU `VTD_FR_RTADDR_INV_TTM`.
    SmInvalidTtm = 0x31,
    /// SRTA.3: page group request while RTADDR_REG.TTM is legacy (00b).
    SmPageRequestLegacyMode = 0x32,
    /// SRT.1: accessing the scalable-mode root entry failed.
    SmRootEntryAccess = 0x38,
    /// SRT.2: present bit (LP/UP) in the root entry is clear.
    SmRootEntryNotPresent = 0x39,
    /// SRT.3: non-zero reserved field in the root entry.
    SmRootEntryReserved = 0x3a,
    /// SCT.1: accessing the scalable-mode context entry failed.
    SmContextEntryAccess = 0x40,
    /// SCT.2: present bit in the context entry is clear.
    SmContextEntryNotPresent = 0x41,
    /// SCT.3: non-zero reserved field in the context entry.
    SmContextEntryReserved = 0x42,
    /// SCT.4: invalid context entry.
    SmContextEntryInvalid = 0x43,
    /// SCT.5: translation request while DTE is clear.
    SmDeviceTlbDisabled = 0x44,
    /// SCT.6: request with PASID while PASIDE is clear.
    SmPasidDisabled = 0x45,
    /// SCT.7: PASID beyond the PASID directory size (PDTS) or the supported PASID width.
    SmPasidTooLarge = 0x46,
    /// SCT.8: page request while PRE is clear.
    SmPageRequestDisabled = 0x47,
    /// SCT.9: RID_PASID beyond the PASID directory size.
    SmRidPasidInvalid = 0x48,
    /// SPD.1: accessing the PASID directory entry failed.
    SmPasidDirEntryAccess = 0x50,
    /// SPD.2: present bit in the PASID directory entry is clear.
    SmPasidDirEntryNotPresent = 0x51,
    /// SPD.3: non-zero reserved field in the PASID directory entry.
    SmPasidDirEntryReserved = 0x52,
    /// SPT.1: accessing the PASID table entry failed.
    SmPasidEntryAccess = 0x58,
    /// SPT.2: present bit in the PASID table entry is clear.
    SmPasidEntryNotPresent = 0x59,
    /// SPT.3: non-zero reserved field in the PASID table entry.
    SmPasidEntryReserved = 0x5a,
    /// SPT.4: invalid PASID table entry (PGTT, AW or FSPM not supported).
    SmPasidEntryInvalid = 0x5b,
    /// SPT.5: execute request while ERE is clear.
    SmExecuteRequestsDisabled = 0x5c,
    /// SPT.6: supervisor request while SRE is clear.
    SmSupervisorRequestsDisabled = 0x5d,
    /// SFS.1: accessing a first-stage paging entry (below the root) failed.
    SmFirstStageEntryAccess = 0x70,
    /// SFS.2: present bit in a first-stage paging entry is clear.
    SmFirstStageEntryNotPresent = 0x71,
    /// SFS.3: non-zero reserved field in a present first-stage paging entry.
    SmFirstStageEntryReserved = 0x72,
    /// SFS.4: accessing the first-stage root (PML5/PML4 entry via FSPTPTR) failed.
    SmFirstStageRootAccess = 0x73,
    /// SFS.5: nested: a first-stage address (table or page) beyond the second-stage width.
    SmNestedFirstStageBeyondWidth = 0x74,
    /// SFS.6: nested: second stage denies reading the first-stage root table.
    SmNestedFirstStageRootRead = 0x75,
    /// SFS.7: nested: second stage denies reading a first-stage paging entry.
    SmNestedFirstStageEntryRead = 0x76,
    /// SFS.8: nested: second stage denies the A/D write to a first-stage paging entry.
    SmNestedFirstStageEntryWrite = 0x77,
    /// SSS.1: accessing a second-stage paging entry failed.
    SmSecondStageEntryAccess = 0x78,
    /// SSS.2: second-stage paging entry with R, W (and X) clear.
    SmSecondStageEntryPermission = 0x79,
    /// SSS.3: non-zero reserved field in a present second-stage paging entry.
    SmSecondStageEntryReserved = 0x7a,
    /// SSS.4: accessing the second-stage root via SSPTPTR failed.
    SmSecondStageRootInvalid = 0x7b,
    /// SSS.5: second-stage A/D update needed with no-snoop set up.
    SmSecondStageAdNoSnoop = 0x7c,
    /// SGN.1: non-canonical input address for first-stage translation.
    SmNonCanonical = 0x80,
    /// SGN.2: user request to a supervisor page (U/S clear somewhere on the walk).
    SmUserPrivilege = 0x81,
    /// SGN.3: execute request to a page without execute permission.
    SmExecuteNotPermitted = 0x82,
    /// SGN.4: input address beyond the hardware's (or the entry's) address width.
    SmAddressBeyondMax = 0x83,
    /// SGN.5: second-stage output address beyond the maximum.
    SmSecondStageAddressBeyondMax = 0x84,
    /// SGN.6: write (or AtomicOp) without write permission.
    SmWriteNotPermitted = 0x85,
    /// SGN.7: read (or AtomicOp) without read permission.
    SmReadNotPermitted = 0x86,
    /// SGN.8: output address in the interrupt address range.
    SmInterruptAddress = 0x87,
    /// SFS.9: first-stage A/D update needed with no-snoop set up.
    SmFirstStageAdNoSnoop = 0x90,
    /// SFS.10: first-stage A/D update failed (QEMU `VTD_FR_FS_BIT_UPDATE_FAILED`).
    SmFirstStageAdUpdate = 0x91,
}

impl FaultReason {
    /// Every reason, in code order.
    pub const ALL: [FaultReason; 61] = {
        use FaultReason::*;
        [
            RootEntryNotPresent,
            ContextEntryNotPresent,
            ContextEntryInvalid,
            AddressBeyondMgaw,
            WriteNotPermitted,
            ReadNotPermitted,
            PagingEntryInvalid,
            RootTableInvalid,
            ContextTableInvalid,
            RootEntryReserved,
            ContextEntryReserved,
            PagingEntryReserved,
            ContextEntryTranslationType,
            InterruptAddress,
            SmRootTableAddressInvalid,
            SmInvalidTtm,
            SmPageRequestLegacyMode,
            SmRootEntryAccess,
            SmRootEntryNotPresent,
            SmRootEntryReserved,
            SmContextEntryAccess,
            SmContextEntryNotPresent,
            SmContextEntryReserved,
            SmContextEntryInvalid,
            SmDeviceTlbDisabled,
            SmPasidDisabled,
            SmPasidTooLarge,
            SmPageRequestDisabled,
            SmRidPasidInvalid,
            SmPasidDirEntryAccess,
            SmPasidDirEntryNotPresent,
            SmPasidDirEntryReserved,
            SmPasidEntryAccess,
            SmPasidEntryNotPresent,
            SmPasidEntryReserved,
            SmPasidEntryInvalid,
            SmExecuteRequestsDisabled,
            SmSupervisorRequestsDisabled,
            SmFirstStageEntryAccess,
            SmFirstStageEntryNotPresent,
            SmFirstStageEntryReserved,
            SmFirstStageRootAccess,
            SmNestedFirstStageBeyondWidth,
            SmNestedFirstStageRootRead,
            SmNestedFirstStageEntryRead,
            SmNestedFirstStageEntryWrite,
            SmSecondStageEntryAccess,
            SmSecondStageEntryPermission,
            SmSecondStageEntryReserved,
            SmSecondStageRootInvalid,
            SmSecondStageAdNoSnoop,
            SmNonCanonical,
            SmUserPrivilege,
            SmExecuteNotPermitted,
            SmAddressBeyondMax,
            SmSecondStageAddressBeyondMax,
            SmWriteNotPermitted,
            SmReadNotPermitted,
            SmInterruptAddress,
            SmFirstStageAdNoSnoop,
            SmFirstStageAdUpdate,
        ]
    };

    /// The code as recorded.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reason with this code, if the architecture defines one for DMA remapping.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// Whether this is a scalable-mode reason (codes 0x30 and up).
    pub const fn is_scalable(self) -> bool {
        self.code() >= 0x30
    }

    /// Whether the fault is "qualified": suppressed when the FPD (Fault Processing Disable)
    /// field of the entry that decided it is set. Faults found before a context entry could be
    /// trusted (root-level faults, errors reading the tables, reserved bits in the context
    /// entry itself) are always reported; QEMU's `vtd_qualified_faults[]` makes the same split.
    pub const fn is_qualified(self) -> bool {
        use FaultReason::*;
        !matches!(
            self,
            RootEntryNotPresent
                | RootTableInvalid
                | ContextTableInvalid
                | RootEntryReserved
                | ContextEntryReserved
                | SmRootTableAddressInvalid
                | SmInvalidTtm
                | SmPageRequestLegacyMode
                | SmRootEntryAccess
                | SmRootEntryNotPresent
                | SmRootEntryReserved
                | SmContextEntryAccess
                | SmContextEntryReserved
                | SmPasidDirEntryAccess
                | SmPasidEntryAccess
        )
    }

    /// The Linux-style description (`dma_remap_fault_reasons[]` and
    /// `dma_remap_sm_fault_reasons[]`; the two codes Linux does not list follow QEMU).
    pub const fn description(self) -> &'static str {
        use FaultReason::*;
        match self {
            RootEntryNotPresent => "Present bit in root entry is clear",
            ContextEntryNotPresent => "Present bit in context entry is clear",
            ContextEntryInvalid => "Invalid context entry",
            AddressBeyondMgaw => "Access beyond MGAW",
            WriteNotPermitted => "PTE Write access is not set",
            ReadNotPermitted => "PTE Read access is not set",
            PagingEntryInvalid => "Next page table ptr is invalid",
            RootTableInvalid => "Root table address invalid",
            ContextTableInvalid => "Context table ptr is invalid",
            RootEntryReserved => "non-zero reserved fields in RTP",
            ContextEntryReserved => "non-zero reserved fields in CTP",
            PagingEntryReserved => "non-zero reserved fields in PTE",
            ContextEntryTranslationType => "PCE for translation request specifies blocking",
            InterruptAddress => "Output address in the interrupt address range",
            SmRootTableAddressInvalid => "SM: Invalid Root Table Address",
            SmInvalidTtm => "SM: TTM 0 for request with PASID",
            SmPageRequestLegacyMode => "SM: TTM 0 for page group request",
            SmRootEntryAccess => "SM: Error attempting to access Root Entry",
            SmRootEntryNotPresent => "SM: Present bit in Root Entry is clear",
            SmRootEntryReserved => "SM: Non-zero reserved field set in Root Entry",
            SmContextEntryAccess => "SM: Error attempting to access Context Entry",
            SmContextEntryNotPresent => "SM: Present bit in Context Entry is clear",
            SmContextEntryReserved => "SM: Non-zero reserved field set in the Context Entry",
            SmContextEntryInvalid => "SM: Invalid Context Entry",
            SmDeviceTlbDisabled => "SM: DTE field in Context Entry is clear",
            SmPasidDisabled => "SM: PASID Enable field in Context Entry is clear",
            SmPasidTooLarge => "SM: PASID is larger than the max in Context Entry",
            SmPageRequestDisabled => "SM: PRE field in Context-Entry is clear",
            SmRidPasidInvalid => "SM: RID_PASID field error in Context-Entry",
            SmPasidDirEntryAccess => "SM: Error attempting to access the PASID Directory Entry",
            SmPasidDirEntryNotPresent => "SM: Present bit in Directory Entry is clear",
            SmPasidDirEntryReserved => "SM: Non-zero reserved field set in PASID Directory Entry",
            SmPasidEntryAccess => "SM: Error attempting to access PASID Table Entry",
            SmPasidEntryNotPresent => "SM: Present bit in PASID Table Entry is clear",
            SmPasidEntryReserved => "SM: Non-zero reserved field set in PASID Table Entry",
            SmPasidEntryInvalid => "SM: Invalid Scalable-Mode PASID Table Entry",
            SmExecuteRequestsDisabled => "SM: ERE field is clear in PASID Table Entry",
            SmSupervisorRequestsDisabled => "SM: SRE field is clear in PASID Table Entry",
            SmFirstStageEntryAccess => "SM: Error attempting to access first-level paging entry",
            SmFirstStageEntryNotPresent => "SM: Present bit in first-level paging entry is clear",
            SmFirstStageEntryReserved => {
                "SM: Non-zero reserved field set in first-level paging entry"
            }
            SmFirstStageRootAccess => "SM: Error attempting to access FL-PML4 entry",
            SmNestedFirstStageBeyondWidth => {
                "SM: First-level entry address beyond MGAW in Nested translation"
            }
            SmNestedFirstStageRootRead => {
                "SM: Read permission error in FL-PML4 entry in Nested translation"
            }
            SmNestedFirstStageEntryRead => {
                "SM: Read permission error in first-level paging entry in Nested translation"
            }
            SmNestedFirstStageEntryWrite => {
                "SM: Write permission error in first-level paging entry in Nested translation"
            }
            SmSecondStageEntryAccess => "SM: Error attempting to access second-level paging entry",
            SmSecondStageEntryPermission => {
                "SM: Read/Write permission error in second-level paging entry"
            }
            SmSecondStageEntryReserved => {
                "SM: Non-zero reserved field set in second-level paging entry"
            }
            SmSecondStageRootInvalid => "SM: Invalid second-level page table pointer",
            SmSecondStageAdNoSnoop => {
                "SM: A/D bit update needed in second-level entry when set up in no snoop"
            }
            SmNonCanonical => "SM: Address in first-level translation is not canonical",
            SmUserPrivilege => "SM: U/S set 0 for first-level translation with user privilege",
            SmExecuteNotPermitted => "SM: No execute permission for request with PASID and ER=1",
            SmAddressBeyondMax => "SM: Address beyond the DMA hardware max",
            SmSecondStageAddressBeyondMax => "SM: Second-level entry address beyond the max",
            SmWriteNotPermitted => "SM: No write permission for Write/AtomicOp request",
            SmReadNotPermitted => "SM: No read permission for Read/AtomicOp request",
            SmInterruptAddress => "SM: Invalid address-interrupt address",
            SmFirstStageAdNoSnoop => {
                "SM: A/D bit update needed in first-level entry when set up in no snoop"
            }
            SmFirstStageAdUpdate => "SM: A/D bit update failed in first-level paging entry",
        }
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.description(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_codes_match_linux_tables() {
        // Pinned to the index of each string in Linux dmar.c (legacy: index = code; scalable:
        // index + 0x30) and to QEMU's VTDFaultReason values.
        assert_eq!(FaultReason::RootEntryNotPresent.code(), 0x01);
        assert_eq!(FaultReason::ContextEntryTranslationType.code(), 0x0d);
        assert_eq!(
            FaultReason::SmInvalidTtm.code(),
            0x31,
            "VTD_FR_RTADDR_INV_TTM"
        );
        assert_eq!(FaultReason::SmPageRequestLegacyMode.code(), 0x32);
        assert_eq!(FaultReason::SmRootEntryAccess.code(), 0x38);
        assert_eq!(
            FaultReason::SmPageRequestDisabled.code(),
            0x47,
            "VTD_FR_SM_PRE_ABS"
        );
        assert_eq!(FaultReason::SmRidPasidInvalid.code(), 0x48);
        assert_eq!(FaultReason::SmPasidEntryInvalid.code(), 0x5b);
        assert_eq!(FaultReason::SmSupervisorRequestsDisabled.code(), 0x5d);
        assert_eq!(FaultReason::SmFirstStageRootAccess.code(), 0x73);
        assert_eq!(FaultReason::SmSecondStageAdNoSnoop.code(), 0x7c);
        assert_eq!(FaultReason::SmInterruptAddress.code(), 0x87);
        assert_eq!(FaultReason::SmFirstStageAdNoSnoop.code(), 0x90);
        assert_eq!(FaultReason::SmFirstStageAdUpdate.code(), 0x91);
    }

    #[test]
    fn test_all_is_sorted_unique_and_round_trips() {
        for pair in FaultReason::ALL.windows(2) {
            assert!(pair[0].code() < pair[1].code(), "{:?}", pair);
        }
        for reason in FaultReason::ALL {
            assert_eq!(FaultReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(FaultReason::from_code(0), None);
        assert_eq!(FaultReason::from_code(0x33), None);
    }

    #[test]
    fn test_display_is_linux_string_and_code() {
        assert_eq!(
            FaultReason::SmPasidEntryNotPresent.to_string(),
            "SM: Present bit in PASID Table Entry is clear (0x59)"
        );
        assert_eq!(
            FaultReason::AddressBeyondMgaw.to_string(),
            "Access beyond MGAW (0x04)"
        );
    }

    #[test]
    fn test_qualified_split_follows_qemu() {
        assert!(!FaultReason::RootEntryNotPresent.is_qualified());
        assert!(!FaultReason::SmPasidEntryAccess.is_qualified());
        assert!(FaultReason::ContextEntryNotPresent.is_qualified());
        assert!(FaultReason::SmFirstStageEntryNotPresent.is_qualified());
    }
}
