//! MSI-X vectors as the vfio-user client hands them to us: one eventfd per vector, plus the
//! mask/pending state SET_IRQS can change. Signalling an eventfd makes QEMU deliver the MSI.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use log::warn;
use rustix::io::Errno;

use crate::vfio_user::{IrqAction, IrqData, IrqSetRequest};

#[derive(Debug, Default)]
struct Vector {
    eventfd: Option<OwnedFd>,
    masked: bool,
    pending: bool,
}

/// The vectors of one IRQ index; shared between the request thread and device workers.
#[derive(Clone, Debug)]
pub struct Interrupts {
    vectors: Arc<Mutex<Vec<Vector>>>,
}

impl Interrupts {
    /// `count` vectors, none assigned.
    pub fn new(count: u32) -> Self {
        let vectors = (0..count).map(|_| Vector::default()).collect();
        Interrupts { vectors: Arc::new(Mutex::new(vectors)) }
    }

    /// Number of vectors.
    pub fn count(&self) -> u32 {
        self.vectors.lock().unwrap().len() as u32
    }

    /// Raises `vector`: signals its eventfd, or marks it pending while masked.
    /// Returns whether an interrupt was actually sent.
    pub fn trigger(&self, vector: u32) -> bool {
        let mut vectors = self.vectors.lock().unwrap();
        let Some(v) = vectors.get_mut(vector as usize) else { return false };
        if v.masked {
            v.pending = true;
            return false;
        }
        signal(v)
    }

    /// Applies a SET_IRQS request to the vectors it names.
    pub fn set(&self, request: IrqSetRequest) -> Result<(), Errno> {
        let mut vectors = self.vectors.lock().unwrap();
        let end = request.start.checked_add(request.count).ok_or(Errno::INVAL)?;
        if end as usize > vectors.len() {
            return Err(Errno::INVAL);
        }
        let range = request.start as usize..end as usize;
        match (request.action, request.data) {
            // DATA_NONE + TRIGGER with count 0 de-assigns every vector (VFIO semantics).
            (IrqAction::Trigger, IrqData::None) if request.count == 0 => {
                vectors.iter_mut().for_each(|v| *v = Vector::default());
            }
            (IrqAction::Trigger, IrqData::Eventfds(fds)) => {
                for (v, fd) in vectors[range].iter_mut().zip(fds) {
                    v.eventfd = fd;
                }
            }
            (action, IrqData::None) => vectors[range].iter_mut().for_each(|v| apply(v, action)),
            (action, IrqData::Bool(flags)) => {
                for (v, _) in vectors[range].iter_mut().zip(flags).filter(|(_, on)| *on) {
                    apply(v, action);
                }
            }
            (_, IrqData::Eventfds(_)) => return Err(Errno::INVAL),
        }
        Ok(())
    }

    /// Whether `vector` has a pending (masked) interrupt.
    pub fn pending(&self, vector: u32) -> bool {
        self.vectors.lock().unwrap().get(vector as usize).is_some_and(|v| v.pending)
    }

    /// Drops every eventfd and mask (client gone).
    pub fn clear(&self) {
        self.vectors.lock().unwrap().iter_mut().for_each(|v| *v = Vector::default());
    }
}

fn apply(v: &mut Vector, action: IrqAction) {
    match action {
        IrqAction::Mask => v.masked = true,
        IrqAction::Unmask => {
            v.masked = false;
            if std::mem::take(&mut v.pending) {
                signal(v);
            }
        }
        IrqAction::Trigger => {
            if v.masked {
                v.pending = true;
            } else {
                signal(v);
            }
        }
    }
}

fn signal(v: &Vector) -> bool {
    let Some(fd) = &v.eventfd else { return false };
    match rustix::io::write(fd, &1u64.to_ne_bytes()) {
        Ok(_) => true,
        Err(e) => {
            warn!("cannot signal MSI-X eventfd: {e}");
            false
        }
    }
}
