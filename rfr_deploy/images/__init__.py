"""Reading and writing images, with a clear one-line error for every bad input.

Images travel through the library as float32 ``H×W×C`` arrays in [0, 1]
(``C`` = 1 or 3). Supported on disk: PNG (8/16-bit, via Pillow and pypng),
TIFF (8/16-bit integer and 32-bit float, via tifffile; compressions tifffile cannot
decode without ``imagecodecs`` through Pillow) and JPEG; gray, gray+alpha, RGB, RGBA
and palette images. The decoder follows the file's signature, not its name; an alpha
channel is kept apart (:class:`Alpha`: the networks never see it) and written back into
the outputs unchanged, as are an embedded ICC colour profile and EXIF (:class:`Extras`); palettes are
expanded, EXIF orientation is applied (JPEG,
8-bit PNG, TIFF). Writes go to a temporary name and are renamed into place, so an
interrupted run never leaves a half-written file; a folder's hidden files (such as
the temporary files of a run that was killed) are not read as images.

:mod:`~rfr_deploy.images.decoding` reads, :mod:`~rfr_deploy.images.encoding` writes,
:mod:`~rfr_deploy.images.listing` finds a folder's images and
:mod:`~rfr_deploy.images.jpeg_header` reads how a JPEG stored its pixels.
"""

from rfr_deploy.images.decoding import MAX_PIXELS, Alpha, Extras, Image, read_image
from rfr_deploy.images.encoding import quantize, write_image
from rfr_deploy.images.listing import SUPPORTED_SUFFIXES, is_listed_image, list_images

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "Alpha",
    "Extras",
    "Image",
    "is_listed_image",
    "list_images",
    "quantize",
    "read_image",
    "write_image",
]
