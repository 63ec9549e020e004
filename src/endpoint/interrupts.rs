//! MSI-X vectors as the vfio-user client hands them to us: one eventfd per vector, plus the
//! mask/pending state SET_IRQS can change. Signalling an eventfd makes QEMU deliver the MSI.
//! Eventfds are written without ever blocking ([`IrqFd`]), so the lock below is never held
//! across a wait on the client.

use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use super::irq_fd::{self, IrqFd};
use crate::vfio_user::{IrqAction, IrqData, IrqSetRequest};

#[derive(Debug, Default)]
struct Vector {
    eventfd: Option<IrqFd>,
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
        Interrupts {
            vectors: Arc::new(Mutex::new(vectors)),
        }
    }

    /// Number of vectors.
    pub fn count(&self) -> u32 {
        self.vectors.lock().unwrap_or_else(|e| e.into_inner()).len() as u32
    }

    /// Raises `vector`: signals its eventfd, or marks it pending while masked.
    /// Returns whether an interrupt was actually sent.
    pub fn trigger(&self, vector: u32) -> bool {
        let mut vectors = self.vectors.lock().unwrap_or_else(|e| e.into_inner());
        let Some(v) = vectors.get_mut(vector as usize) else {
            return false;
        };
        if v.masked {
            v.pending = true;
            return false;
        }
        signal(vector as usize, v)
    }

    /// Applies a SET_IRQS request to the vectors it names.
    pub fn set(&self, request: IrqSetRequest) -> Result<(), Errno> {
        let mut vectors = self.vectors.lock().unwrap_or_else(|e| e.into_inner());
        let end = request
            .start
            .checked_add(request.count)
            .ok_or(Errno::INVAL)?;
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
                // All or nothing: one unusable fd refuses the whole request.
                let fds = fds
                    .into_iter()
                    .map(|fd| fd.map(IrqFd::new).transpose())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        warn_limited!("SET_IRQS refused: {e}");
                        Errno::INVAL
                    })?;
                for (v, fd) in vectors[range].iter_mut().zip(fds) {
                    v.eventfd = fd;
                }
            }
            (action, IrqData::None) => {
                for (i, v) in vectors[range.clone()].iter_mut().enumerate() {
                    apply(range.start + i, v, action);
                }
            }
            (action, IrqData::Bool(flags)) => {
                let on = vectors[range.clone()].iter_mut().zip(flags).enumerate();
                for (i, (v, _)) in on.filter(|(_, (_, on))| *on) {
                    apply(range.start + i, v, action);
                }
            }
            (_, IrqData::Eventfds(_)) => return Err(Errno::INVAL),
        }
        Ok(())
    }

    /// Whether `vector` has a pending (masked) interrupt.
    pub fn pending(&self, vector: u32) -> bool {
        self.vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(vector as usize)
            .is_some_and(|v| v.pending)
    }

    /// Drops every eventfd and mask (client gone).
    pub fn clear(&self) {
        self.vectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .for_each(|v| *v = Vector::default());
    }
}

fn apply(index: usize, v: &mut Vector, action: IrqAction) {
    match action {
        IrqAction::Mask => v.masked = true,
        IrqAction::Unmask => {
            v.masked = false;
            if std::mem::take(&mut v.pending) {
                signal(index, v);
            }
        }
        IrqAction::Trigger => {
            if v.masked {
                v.pending = true;
            } else {
                signal(index, v);
            }
        }
    }
}

/// Signals vector `index`'s eventfd, if any; a client that tampered with it loses it.
fn signal(index: usize, v: &mut Vector) -> bool {
    let Some(fd) = &v.eventfd else { return false };
    let outcome = fd.signal();
    if outcome == irq_fd::Signalled::Tampered {
        v.eventfd = None;
    }
    irq_fd::report(index, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::OwnedFd;

    fn eventfd() -> OwnedFd {
        rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap()
    }

    fn count(fd: &OwnedFd) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(fd, &mut buf) {
            Ok(_) => u64::from_ne_bytes(buf),
            Err(_) => 0,
        }
    }

    fn request(action: IrqAction, start: u32, count: u32, data: IrqData) -> IrqSetRequest {
        IrqSetRequest {
            index: 2,
            start,
            count,
            action,
            data,
        }
    }

    fn with_fd(irqs: &Interrupts, vector: u32) -> OwnedFd {
        let fd = eventfd();
        let dup = rustix::io::dup(&fd).unwrap();
        irqs.set(request(
            IrqAction::Trigger,
            vector,
            1,
            IrqData::Eventfds(vec![Some(dup)]),
        ))
        .unwrap();
        fd
    }

    #[test]
    fn test_trigger_signals_the_assigned_eventfd() {
        let irqs = Interrupts::new(4);
        let fd = with_fd(&irqs, 2);
        assert!(irqs.trigger(2));
        assert!(!irqs.trigger(1), "vector 1 has no eventfd");
        assert!(!irqs.trigger(9), "no vector 9");
        assert_eq!(count(&fd), 1);
    }

    #[test]
    fn test_masked_vector_pends_and_fires_on_unmask() {
        let irqs = Interrupts::new(1);
        let fd = with_fd(&irqs, 0);
        irqs.set(request(IrqAction::Mask, 0, 1, IrqData::None))
            .unwrap();
        assert!(!irqs.trigger(0));
        assert!(irqs.pending(0));
        assert_eq!(count(&fd), 0);
        irqs.set(request(IrqAction::Unmask, 0, 1, IrqData::Bool(vec![true])))
            .unwrap();
        assert!(!irqs.pending(0));
        assert_eq!(count(&fd), 1);
    }

    #[test]
    fn test_deassign_and_out_of_range_requests() {
        let irqs = Interrupts::new(2);
        let fd = with_fd(&irqs, 1);
        irqs.set(request(
            IrqAction::Trigger,
            1,
            1,
            IrqData::Eventfds(vec![None]),
        ))
        .unwrap();
        assert!(!irqs.trigger(1));
        assert_eq!(count(&fd), 0);
        assert_eq!(
            irqs.set(request(IrqAction::Mask, 1, 2, IrqData::None)),
            Err(Errno::INVAL)
        );
        assert_eq!(
            irqs.set(request(IrqAction::Mask, u32::MAX, 2, IrqData::None)),
            Err(Errno::INVAL)
        );
        assert_eq!(
            irqs.set(request(
                IrqAction::Mask,
                0,
                1,
                IrqData::Eventfds(vec![None])
            )),
            Err(Errno::INVAL)
        );
    }

    #[test]
    fn test_one_fd_that_is_not_an_eventfd_refuses_the_whole_request() {
        let irqs = Interrupts::new(2);
        let first = with_fd(&irqs, 0);
        let (_read, write) = rustix::pipe::pipe().unwrap();
        let fds = vec![Some(eventfd()), Some(write)];
        assert_eq!(
            irqs.set(request(IrqAction::Trigger, 0, 2, IrqData::Eventfds(fds))),
            Err(Errno::INVAL)
        );
        assert!(irqs.trigger(0));
        assert_eq!(count(&first), 1, "vector 0 kept its eventfd");
        assert!(!irqs.trigger(1), "vector 1 got nothing");
    }

    #[test]
    fn test_trigger_with_no_data_fires_the_vectors() {
        let irqs = Interrupts::new(1);
        let fd = with_fd(&irqs, 0);
        irqs.set(request(IrqAction::Trigger, 0, 1, IrqData::None))
            .unwrap();
        assert_eq!(count(&fd), 1);
        irqs.set(request(IrqAction::Trigger, 0, 0, IrqData::None))
            .unwrap();
        assert!(
            !irqs.trigger(0),
            "count 0 + DATA_NONE de-assigns everything"
        );
    }
}
