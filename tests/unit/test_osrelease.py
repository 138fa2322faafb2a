from hooks import osrelease

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nIMAGE_ID="triton-pi"\n'


def test_parse():
    f = osrelease.parse_os_release(DEBIAN)
    assert f["ID"] == "debian"
    assert f["PRETTY_NAME"] == "Debian GNU/Linux 13 (trixie)"


def test_with_fields_replaces_and_appends():
    text = osrelease.with_fields(DEBIAN, {"IMAGE_ID": "x", "TRITON_RELEASE": "20261125T000000Z"})
    f = osrelease.parse_os_release(text)
    assert f["IMAGE_ID"] == "x"
    assert f["TRITON_RELEASE"] == "20261125T000000Z"
    assert text.count("IMAGE_ID=") == 1
    assert text.startswith('PRETTY_NAME=')


def test_product_file_names_the_stamp():
    text = osrelease.product_file("Triton Linux Compute Node", "20261125T000000Z", "Debian 13")
    assert "Live Image: 20261125T000000Z\n" in text
    assert text.startswith("Name: Triton Linux Compute Node\n")
