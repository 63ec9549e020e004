//! Fuzz target: the accel device's work queues and plain engine driven through BAR0 — arbitrary
//! descriptors, BATCH lists, rings, doorbells, register values and resets (devices/accel/
//! README.md, "Work queue registers", "Descriptor"), plus descriptor decoding on its own.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vsvm::devices::accel::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use vsvm::devices::accel::regs::{offset, wq_offset, WqStatus, WQ_COUNT};
use vsvm::devices::accel::{self, Accel, MSIX_VECTORS, REGS_BAR};
use vsvm::endpoint::{Endpoint, CONFIG_REGION, MSIX_IRQ_INDEX};
use vsvm::mem::Gpa;
use vsvm::vfio_user::{Device, DmaMapRequest, IrqAction, IrqData, IrqSetRequest};
use vsvm_fuzz::{sealed_memfd, Input, PAGE};
use zerocopy::{FromBytes, IntoBytes};

/// Guest RAM: ring n in page 1 + n, BATCH lists and data anywhere.
const PAGES: u64 = 16;
const RING_SIZE: u32 = (PAGE / DESCRIPTOR_SIZE) as u32;
const BAR0: u32 = REGS_BAR as u32;
/// PCI Command: memory space and bus mastering (PCI 3.0 §6.2.2).
const PCI_COMMAND: u64 = 0x04;
const COMMAND_MEMORY_MASTER: u16 = (1 << 1) | (1 << 2);
/// Opcodes the device knows are 0..=4; a few more reach the "bad opcode" path.
const OPCODES: u64 = 6;
/// Longer than any job on 64 KiB of RAM can take: past it a queue is stuck, which is a bug.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_OPS: usize = 128;

fn wq_reg(wq: u64, reg: u64) -> u64 {
    offset::WQ_BLOCKS + wq * offset::WQ_STRIDE + reg
}

fn read32(ep: &mut Endpoint<Accel>, at: u64) -> u32 {
    let mut out = [0; 4];
    let _ = ep.region_read(BAR0, at, &mut out);
    u32::from_le_bytes(out)
}

/// A descriptor shaped enough to get past the first checks often, arbitrary otherwise.
fn descriptor(input: &mut Input) -> Descriptor {
    let raw = input.bool();
    let control = if raw {
        input.u32()
    } else {
        // OPCODE | CRAV | RCI | PV | PRIV, reserved bits clear.
        input.below(OPCODES) as u32 | (u32::from(input.u8() & 0xf) << 8)
    };
    let len = if raw {
        input.u32()
    } else {
        input.below(2 * PAGE) as u32
    };
    Descriptor {
        control,
        pasid: if raw { input.u32() } else { 0 },
        completion: input.addr(PAGES) & !if raw { 0 } else { 0x1f },
        src: input.addr(PAGES),
        dst: input.addr(PAGES),
        len,
        pattern: input.u64(),
        ..Descriptor::default()
    }
}

/// Waits until no queue and not the plain engine is busy, and every enabled queue consumed
/// its ring up to TAIL. Never getting there is a stuck queue: a bug.
fn wait_idle(ep: &mut Endpoint<Accel>) {
    let deadline = Instant::now() + IDLE_TIMEOUT;
    loop {
        let queues_idle = (0..WQ_COUNT as u64).all(|wq| {
            let status = WqStatus::from_bits(read32(ep, wq_reg(wq, wq_offset::STATUS)));
            let head = read32(ep, wq_reg(wq, wq_offset::HEAD));
            let tail = read32(ep, wq_reg(wq, wq_offset::TAIL));
            !status.busy() && (!status.enabled() || head == tail)
        });
        let engine_busy = read32(ep, offset::DMA_STATUS) & 3 == 1;
        if queues_idle && !engine_busy {
            return;
        }
        assert!(Instant::now() < deadline, "accel never went idle");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// One function for every run, as the server keeps one between clients: each run starts
/// where a new client would, after the reset a disconnect does (so a run is cheap, and
/// power-on state after that reset is part of what is checked). Also its RAM.
static DEVICE: Mutex<Option<(Endpoint<Accel>, File)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut device = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    let (ep, ram) = device.get_or_insert_with(|| {
        let ep = accel::endpoint(accel::VENDOR_ID, accel::DEVICE_ID).unwrap();
        (ep, sealed_memfd(PAGES * PAGE))
    });
    ep.disconnected();
    for wq in 0..WQ_COUNT as u64 {
        let status = read32(ep, wq_reg(wq, wq_offset::STATUS));
        assert_eq!(
            status, 0,
            "queue {wq} not at power-on state after a disconnect"
        );
    }
    assert_eq!(read32(ep, offset::SWERR), 0, "SWERR survived a disconnect");
    ram.write_all_at(&[0; (PAGES * PAGE) as usize], 0).unwrap();
    let map = DmaMapRequest {
        address: 0,
        size: PAGES * PAGE,
        fd_offset: 0,
        readable: true,
        writable: true,
    };
    ep.dma_map(map, Some(ram.try_clone().unwrap().into()))
        .unwrap();
    let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
    let vectors = (0..MSIX_VECTORS)
        .map(|_| Some(rustix::event::eventfd(0, flags).unwrap()))
        .collect();
    ep.set_irqs(IrqSetRequest {
        index: MSIX_IRQ_INDEX,
        start: 0,
        count: MSIX_VECTORS.into(),
        action: IrqAction::Trigger,
        data: IrqData::Eventfds(vectors),
    })
    .unwrap();
    let command = if input.u8().is_multiple_of(8) {
        0
    } else {
        COMMAND_MEMORY_MASTER
    };
    ep.region_write(CONFIG_REGION, PCI_COMMAND, &command.to_le_bytes())
        .unwrap();
    let mem = ep.bus().mem.clone();
    // Mostly start with both queues enabled on their rings.
    let mut tails = [0u32; WQ_COUNT];
    if !input.u8().is_multiple_of(4) {
        for wq in 0..WQ_COUNT as u64 {
            let base = (1 + wq) * PAGE;
            let _ = ep.region_write(BAR0, wq_reg(wq, wq_offset::BASE), &base.to_le_bytes());
            let size = RING_SIZE.to_le_bytes();
            let _ = ep.region_write(BAR0, wq_reg(wq, wq_offset::SIZE), &size);
            let ctrl = 1 | u32::from(input.u8() & 0x2) | (1 << 8);
            let _ = ep.region_write(BAR0, wq_reg(wq, wq_offset::CTRL), &ctrl.to_le_bytes());
        }
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 9 {
            // Descriptors into a ring, then its doorbell.
            0..=2 => {
                let wq = input.below(WQ_COUNT as u64) as usize;
                for _ in 0..=input.below(4) {
                    let at = (1 + wq as u64) * PAGE + u64::from(tails[wq]) * DESCRIPTOR_SIZE;
                    let _ = mem.write(Gpa(at), descriptor(&mut input).as_bytes());
                    tails[wq] = (tails[wq] + 1) % RING_SIZE;
                }
                let tail = if input.u8().is_multiple_of(8) {
                    input.u32()
                } else {
                    tails[wq]
                };
                let _ = ep.region_write(
                    BAR0,
                    wq_reg(wq as u64, wq_offset::TAIL),
                    &tail.to_le_bytes(),
                );
            }
            // A BATCH list somewhere in RAM.
            3 => {
                let at = input.below(PAGES * PAGE / DESCRIPTOR_SIZE) * DESCRIPTOR_SIZE;
                for i in 0..=input.below(8) {
                    let desc = descriptor(&mut input);
                    let _ = mem.write(Gpa(at + i * DESCRIPTOR_SIZE), desc.as_bytes());
                }
            }
            // Any register, any value, any size.
            4 => {
                let at = if input.bool() {
                    input.below(0x300)
                } else {
                    wq_reg(input.below(2), input.below(offset::WQ_STRIDE))
                };
                let value = input.word(PAGES).to_le_bytes();
                let size = [4, 8, 4, 2, 1, 3][input.below(6) as usize];
                let _ = ep.region_write(BAR0, at, &value[..size]);
                if at == wq_reg(0, wq_offset::CTRL) || at == wq_reg(1, wq_offset::CTRL) {
                    // A (re-)enable starts from slot 0.
                    tails[((at - offset::WQ_BLOCKS) / offset::WQ_STRIDE) as usize] = 0;
                }
            }
            5 => {
                let slot = input.below(PAGES * PAGE / 8);
                let _ = mem.write_u64(Gpa(slot * 8), input.word(PAGES));
            }
            6 => wait_idle(ep),
            // Decoding alone.
            7 => {
                let raw = input.bytes(DESCRIPTOR_SIZE as usize);
                if let Ok((desc, _)) = Descriptor::read_from_prefix(raw) {
                    let _ = desc.operation();
                    let _ = desc.completion_aligned();
                }
            }
            _ => {
                let _ = ep.reset();
                tails = [0; WQ_COUNT];
            }
        }
    }
    wait_idle(ep);
});
