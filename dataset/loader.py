"""The training loader: batches of a dataset's items on the device, epoch after epoch, from persistent workers.

- Each item the sampler yields is (epoch, index): persistent workers keep the copy of the dataset they started with,
  so a set_epoch in the main process would never reach them; the epoch travels with the item instead.
- Workers run one OpenCV and one torch thread: several workers already share the cores, and OpenCV's default pool
  (a thread per core in every worker) costs more in contention than it gains.
- For a GPU (finish_on_device), a VideoMatte240KDataset's workers send uint8 frames after the augmentation's geometry,
  with the state of the item's generator; the main process converts them to float and applies the appearance
  changes on the device, continuing from that state. The batches are those of the CPU path within float rounding
  (on the CPU the same code gives them exactly), so a resumed run stays identical to an uninterrupted one. uint8 is a
  quarter of float32's bytes to send, and the conversion and appearance changes leave the workers' CPUs.
  On the CPU the workers finish their items as before: there the main process trains, and every cycle it spends on
  the data is one the model does not get.
"""
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .video_matte import VideoMatte240KDataset

# Batches each worker keeps ready. With 12 workers at 224x224 that is 24 batches (96 clips, 0.27 GB as uint8),
# over a second of a fast GPU's training, enough to ride out one slow clip; more only holds more shared memory.
PREFETCH_BATCHES = 2


class EpochSampler(Sampler):
    """Yields (epoch, index) for each index of the current epoch; set_epoch_indices() before each epoch."""

    def __init__(self):
        self.epoch, self.indices = 0, []

    def set_epoch_indices(self, epoch: int, indices: Sequence[int]) -> None:
        self.epoch, self.indices = epoch, list(indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochItems(Dataset):
    """`dataset` indexed by (epoch, index): its item `index` of epoch `epoch`. With warped (a VideoMatte240KDataset),
    the item is warped_item's uint8 fgr, pha and bgr in one tensor (T, 7, S, S) and the generator's state as bytes:
    each tensor of a batch crosses from a worker in a shared-memory block of its own, whose fixed cost is most of
    the main process's cost of receiving a batch, while bytes travel in the pickled message."""

    def __init__(self, dataset: Dataset, warped: bool = False):
        self.dataset, self.warped = dataset, warped

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, index = item
        self.dataset.set_epoch(epoch)
        if not self.warped:
            return self.dataset[index]
        fgr, pha, bgr, generator = self.dataset.warped_item(index)
        return torch.cat([fgr, pha, bgr], dim=1), generator.get_state().numpy().tobytes()


class TrainLoader:
    """Batches (fgr, pha, bgr) of `dataset`'s items on `device`: float32 (B, T, 3, S, S), (B, T, 1, S, S),
    (B, T, 3, S, S) in 0..1, B = batch_size (an epoch's last partial batch dropped), from num_workers persistent
    workers (0: in the main process). finish_on_device defaults to True for a VideoMatte240KDataset on a device other
    than the CPU (see the module docstring). worker_init_fn, if given, runs in each worker after the thread limits.
    wait_seconds adds up the time spent waiting for batches (receiving and finishing them); wait_share() tells its
    share of the time."""

    def __init__(self, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, seed: int = 0,
                 finish_on_device: bool | None = None, worker_init_fn: Callable[[int], None] | None = None):
        if finish_on_device is None:
            finish_on_device = device.type != 'cpu' and isinstance(dataset, VideoMatte240KDataset)
        self.dataset, self.device, self.finish_on_device = dataset, device, finish_on_device
        self.sampler = EpochSampler()
        # Its own generator: the DataLoader draws its workers' base seed from it, not from the global random state
        # that a checkpoint restores.
        self.loader = DataLoader(EpochItems(dataset, finish_on_device), batch_size, sampler=self.sampler,
                                 num_workers=num_workers, pin_memory=device.type == 'cuda', drop_last=True,
                                 generator=torch.Generator().manual_seed(seed),
                                 worker_init_fn=functools.partial(start_worker, worker_init_fn),
                                 persistent_workers=num_workers > 0,
                                 prefetch_factor=PREFETCH_BATCHES if num_workers > 0 else None)
        self.wait_seconds = 0.0
        self.share_since = (0.0, time.perf_counter())

    def wait_share(self) -> float:
        """The share (0..1) of the wall time since the previous call (or since this loader was made) that was spent
        waiting for batches: train.py's data-wait share."""
        waited, started = self.share_since
        self.share_since = (self.wait_seconds, time.perf_counter())
        return (self.wait_seconds - waited) / max(self.share_since[1] - started, 1e-9)

    def epoch(self, epoch: int, indices: Sequence[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The batches of dataset items `indices` (an epoch's order, or what is left of it after a resume) in
        `epoch`. A DatasetError of an item is raised here, as it is of the batch."""
        self.sampler.set_epoch_indices(epoch, indices)
        with one_opencv_thread():  # the workers fork here, in the first epoch
            batches = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = self.finish(next(batches))
            except StopIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - started
            yield batch

    def finish(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A collated batch on the device as float32 (fgr, pha, bgr); with finish_on_device, converted and changed
        there, item by item from its generator state."""
        if not self.finish_on_device:
            return tuple(x.to(self.device, non_blocking=True) for x in batch)
        frames, states = batch
        fgr, pha, bgr = frames.to(self.device, non_blocking=True).split([3, 1, 3], dim=2)
        items = [self.dataset.augmentation.appearance(fgr[i], pha[i], bgr[i], generator_from_state(state))
                 for i, state in enumerate(states)]
        return tuple(torch.stack(part) for part in zip(*items))


def generator_from_state(state: bytes) -> torch.Generator:
    """A CPU generator in `state` (the bytes of Generator.get_state()'s uint8 tensor)."""
    generator = torch.Generator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


@contextlib.contextmanager
def one_opencv_thread() -> Iterator[None]:
    """OpenCV's thread pool at one thread in this process meanwhile. Around the fork of DataLoader workers: a child
    that resizes a pool it inherited deadlocks (fork copies the pool's condition variables but not its threads), and
    a one-thread pool has nothing to resize."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def start_worker(worker_init_fn: Callable[[int], None] | None, worker_id: int) -> None:
    """One OpenCV and one torch thread in this worker, then the caller's worker_init_fn."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)
