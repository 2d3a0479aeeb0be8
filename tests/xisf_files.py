"""Hand-built XISF files for the tests, independent of astrotf's writer: the layout of the specification
(signature, header length, reserved word, XML header, attached blocks)."""

import struct

NAMESPACE = "http://www.pixinsight.com/xisf"


def build_xisf(image_attributes: str, block: bytes, children: str = "", *, images: int = 1,
               position: int | None = None, size: int | None = None, signature: bytes = b"XISF0100",
               tail: bytes = b"") -> bytes:
    """An XISF file with ``images`` Image elements sharing one attached data block.

    ``image_attributes`` goes into each ``<Image ...>`` tag as is, followed by ``location`` (the block's
    ``attachment:POS:SIZE``) unless it has one. ``children``: the Image
    element's content. ``position``/``size`` override the announced ones; ``tail`` is appended.
    """
    position_text = "0" * 12  # fixed width: the header's length does not depend on the position
    for _ in range(2):
        location = f"attachment:{position_text}:{len(block) if size is None else size}"
        attributes = image_attributes if "location=" in image_attributes else (
            f'{image_attributes} location="{location}"')
        image = f"<Image {attributes}>{children}</Image>"
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<xisf version="1.0" xmlns="{NAMESPACE}">'
               f'{image * images}<Metadata><Property id="XISF:CreatorApplication" type="String">'
               f"tests</Property></Metadata></xisf>").encode()
        start = 16 + len(xml) + 16
        position_text = f"{start if position is None else position:012d}"
    head = signature + struct.pack("<II", len(xml), 0) + xml
    return head + b"\0" * (start - len(head)) + block + tail
