//! What a PASID can be bound to (the seed's "bind": a process, a guest page table or a guest
//! PASID table), after which the IOMMU translates that PASID's requests nested: first stage
//! owned by the process or guest, second stage by the host — here the client's DMA map.

/// First-stage paging depth (x86: CR4.LA57).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PagingLevels {
    /// 4-level paging, 48-bit virtual addresses.
    #[default]
    Four,
    /// 5-level paging, 57-bit virtual addresses.
    Five,
}

/// Attributes of a bound first-stage table that a PASID entry carries (VT-d 9.6, Linux
/// `intel_pasid_setup_first_level` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FirstStageFlags {
    /// Supervisor requests allowed (SRE).
    pub supervisor: bool,
    /// Write protect applies to supervisor requests (WPE, CR0.WP).
    pub write_protect: bool,
    /// Extended accessed flag (EAFE).
    pub extended_accessed: bool,
}

/// One CPU-format page table: physical address of its top level (guest-physical for a guest
/// table), its depth and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageTable {
    /// Address of the PML4 / PML5 page.
    pub root: u64,
    /// Depth.
    pub levels: PagingLevels,
    /// PASID-entry attributes.
    pub flags: FirstStageFlags,
}

/// What to bind a device's PASID to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// A host process's page table (native SVA, first stage only).
    Process(PageTable),
    /// A guest process's page table, translated nested through the second stage (vSVM on
    /// VT-d: the guest's PASID entry's first-stage pointer, bound per PASID).
    GuestPageTable(PageTable),
    /// A guest PASID table (the guest owns every PASID entry of the device, as on Arm SMMUv3 or
    /// AMD): `dir` is the guest-physical address of a VT-d scalable-mode PASID directory and
    /// `pasid_bits` how many PASID bits it covers. The PASID given to `bind` is ignored.
    GuestPasidTable {
        /// Guest-physical address of the PASID directory.
        dir: u64,
        /// PASIDs covered: 2^pasid_bits.
        pasid_bits: u8,
    },
}
