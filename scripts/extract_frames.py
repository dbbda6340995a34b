"""Extract VideoMatte240K's videos to JPEG frames with OpenCV (no ffmpeg program needed).

    python scripts/extract_frames.py /data/VideoMatte240K /data/VideoMatte240KFrames --workers 8

Reads every split folder of SOURCE that holds fgr/ and pha/ videos (<split>/fgr/<clip>.mp4 and
<split>/pha/<clip>.mp4) and writes DESTINATION/<split>/fgr/<clip>/<frame>.jpg and .../pha/... (the
layout of README's Data section; alpha as grayscale JPEG). The split VideoMatte240K names test is written as valid.
Resumable: a clip is written under a hidden name and renamed when both its fgr and pha are complete,
so a rerun skips complete clips and redoes unfinished ones. fgr and pha of a clip must have the same
number of frames. Ctrl-C (SIGINT) or SIGTERM stops the clips being written, removes their partial frames, keeps
the complete clips and exits with status 130 or 143. A DESTINATION whose frame folders would replace a video of
SOURCE, or SOURCE itself, is refused.
"""
import argparse
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import cv2
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from atomic_file import check_output_folder  # noqa: E402
from errors import UserError, run_main  # noqa: E402
from input_paths import inside, same_path  # noqa: E402

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.avi', '.mkv', '.webm')
SPLIT_NAMES = {'test': 'valid'}

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('source', help='folder holding the splits of videos (train/, test/, ...)')
parser.add_argument('destination', help='folder to write the frames to (the videomatte path of data_path.py)')
parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                    help='clips extracted at the same time (threads: OpenCV decodes and encodes outside the GIL)')
parser.add_argument('--quality', type=int, default=95, help='JPEG quality of the frames, 1-100')


class ExtractError(UserError):
    """A video or folder that cannot be extracted: the message names it and what to do."""


class Stopped(Exception):
    """Raised in a clip's thread when the run stops early (Ctrl-C, SIGTERM, another clip's error)."""


def main(argv: Sequence[str] | None = None) -> None:
    args = parser.parse_args(argv)
    os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')  # FFmpeg's own messages would bury ours
    run_main(lambda: extract(args), 'complete clips are kept; run again to extract the others')


def extract(args: argparse.Namespace) -> None:
    if not 1 <= args.quality <= 100 or args.workers < 1:
        raise ExtractError('--quality must be within 1..100 and --workers at least 1')
    tasks = find_clips(args.source, args.destination)
    check_output_folder(args.destination, 'DESTINATION')
    stop = threading.Event()
    extracted = 0
    with ThreadPoolExecutor(args.workers) as executor, tqdm(total=len(tasks), unit='clip') as progress:
        futures = [executor.submit(extract_clip, *task, args.quality, stop) for task in tasks]
        try:
            for future in as_completed(futures):
                extracted += future.result()
                progress.update()
        except BaseException as error:
            # The clips being written stop at their next frame and remove what they wrote; the others never start.
            stop.set()
            executor.shutdown(cancel_futures=True)
            if isinstance(error, OSError):  # the disk filled up or a folder became unwritable
                raise ExtractError(str(error)) from None
            raise
    print(f'{extracted} clips extracted, {len(tasks) - extracted} already complete, in {args.destination}')


def find_clips(source: str, destination: str) -> list[tuple[str, str, str, str]]:
    """(fgr video, pha video, fgr frame folder, pha frame folder) of every clip of every split in source."""
    if not os.path.isdir(source):
        raise ExtractError(f'{source}: folder not found; give the folder holding the splits of videos')
    splits = sorted(name for name in os.listdir(source) if os.path.isdir(os.path.join(source, name, 'fgr')))
    if not splits:
        raise ExtractError(f'{source}: no <split>/fgr/ folder; give the folder holding train/ and test/')
    tasks, split_of = [], {}
    for split in splits:
        destination_split = SPLIT_NAMES.get(split, split)
        if destination_split in split_of:
            raise ExtractError(f'{source}: splits {split_of[destination_split]} and {split} would both be written '
                               f'to {destination_split}/; move one of them away')
        split_of[destination_split] = split
        fgr_dir, pha_dir = os.path.join(source, split, 'fgr'), os.path.join(source, split, 'pha')
        fgr_videos, pha_videos = list_videos(fgr_dir), list_videos(pha_dir)
        if fgr_videos != pha_videos:
            name = sorted(set(fgr_videos) ^ set(pha_videos))[0]
            found, missing = (fgr_dir, pha_dir) if name in fgr_videos else (pha_dir, fgr_dir)
            raise ExtractError(f'{os.path.join(found, name)}: no video of that name in {missing}; add it or '
                               f'move this one away')
        for name in fgr_videos:
            clip = os.path.splitext(name)[0]
            tasks.append((os.path.join(fgr_dir, name), os.path.join(pha_dir, name),
                          os.path.join(destination, destination_split, 'fgr', clip),
                          os.path.join(destination, destination_split, 'pha', clip)))
    if not tasks:
        raise ExtractError(f'{source}: no videos ({", ".join(VIDEO_EXTENSIONS)}) in any <split>/fgr/ folder')
    refuse_folders_over_videos(source, tasks)
    return tasks


def refuse_folders_over_videos(source: str, tasks: list[tuple[str, str, str, str]]) -> None:
    """ExtractError when a frame folder the tasks write or replace (a clip's, or its hidden one) is one of the
    videos, or SOURCE or a folder holding it: a DESTINATION that overlaps SOURCE so that frames would replace what
    is read."""
    videos = {os.path.realpath(video) for task in tasks for video in task[:2]}
    for task in tasks:
        for folder in (folder for frames in task[2:] for folder in (frames, hidden(frames))):
            if os.path.realpath(folder) in videos or same_path(source, folder) or inside(source, folder):
                raise ExtractError(f'{folder}, where frames would be written, is a video of SOURCE {source} or holds '
                                   f'them: choose a DESTINATION apart from SOURCE')


def list_videos(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise ExtractError(f'{folder}: folder not found; each split needs fgr/ and pha/ videos')
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith('.') and name.lower().endswith(VIDEO_EXTENSIONS))


def extract_clip(fgr_video: str, pha_video: str, fgr_frames: str, pha_frames: str, quality: int,
                 stop: threading.Event) -> bool:
    """Write one clip's frames; False if it was already complete. When `stop` is set, it removes what it wrote and
    raises Stopped."""
    if os.path.isdir(fgr_frames) and os.path.isdir(pha_frames):
        return False
    try:
        fgr_count = write_frames(fgr_video, hidden(fgr_frames), quality, False, stop)
        pha_count = write_frames(pha_video, hidden(pha_frames), quality, True, stop)
        if fgr_count != pha_count:
            raise ExtractError(f'{pha_video}: {pha_count} frames but {fgr_video} has {fgr_count}; fgr and pha must '
                               f'match frame for frame: replace the damaged video or move the clip away')
    except BaseException:
        for folder in (fgr_frames, pha_frames):
            shutil.rmtree(hidden(folder), ignore_errors=True)
        raise
    for folder in (fgr_frames, pha_frames):
        shutil.rmtree(folder, ignore_errors=True)  # one half of a clip whose other half was interrupted
        os.replace(hidden(folder), folder)
    return True


def hidden(folder: str) -> str:
    """Where a clip's frames are written until complete (the dataset ignores names starting with '.')."""
    parent, name = os.path.split(folder)
    return os.path.join(parent, f'.{name}.partial')


def write_frames(video: str, folder: str, quality: int, grayscale: bool, stop: threading.Event) -> int:
    """Decode every frame of `video` to folder/00000.jpg, 00001.jpg, ...; the number of frames. Stopped when `stop`
    is set."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        raise ExtractError(f'{video}: OpenCV cannot open this video; re-download it or move it away')
    count = 0
    try:
        while True:
            if stop.is_set():
                raise Stopped(video)
            ok, frame = capture.read()
            if not ok:
                break
            if grayscale:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            if not cv2.imwrite(os.path.join(folder, f'{count:05d}.jpg'), frame, [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise ExtractError(f'{folder}: cannot write frames; check the free disk space and permissions')
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise ExtractError(f'{video}: no frame could be decoded; re-download it or move it away')
    return count


if __name__ == '__main__':
    main()
