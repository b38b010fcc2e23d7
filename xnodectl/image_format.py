"""The XnodeOS image formats, the words of `image build --format`. Standard library only: the
CLI imports it at start-up to show the choices in --help."""

from enum import StrEnum


class ImageFormat(StrEnum):
    ISO = "iso"  # the installer
    QCOW2 = "qcow2"  # bootable disk images
    RAW = "raw"

    @property
    def suffixes(self) -> tuple[str, ...]:
        return {"iso": (".iso",), "qcow2": (".qcow2",), "raw": (".raw", ".img")}[self.value]
