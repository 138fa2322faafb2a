"""Tools for people and tests, not called by mkosi: making the host ready to
build (hostsetup, run by make) and writing an image manifest for a tarball
(image_pack, used by the tests' container image)."""
