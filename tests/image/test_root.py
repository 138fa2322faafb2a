"""What is inside the root squashfs."""

import json
import os
import re
import subprocess

import pytest

from tests.conftest import REPO
from tests.lib.cpio_initrd import newc_entries, zstd_frames_end


def test_stamp_is_in_the_image(platform, image_root):
    os_release = (image_root.path / "usr/lib/os-release").read_text()
    assert f'TRITON_RELEASE="{platform.stamp}"' in os_release
    assert (image_root.path / "etc/os-release").resolve().name == "os-release"
    assert f"Live Image: {platform.stamp}" in (image_root.path / "etc/product").read_text()


def test_zfs_modules_are_built_for_the_image_kernel(platform, image_root):
    kver = platform.manifest["kernel"]
    moddir = image_root.path / "usr/lib/modules" / kver
    dep = (moddir / "modules.dep").read_text()
    for mod in ("spl", "zfs"):
        files = list((moddir / "updates/dkms").glob(f"{mod}.ko*"))
        assert files, f"{mod}.ko missing for {kver}"
        vermagic = subprocess.run(["modinfo", "-F", "vermagic", str(files[0])],
                                  capture_output=True, text=True).stdout
        assert vermagic.split()[0] == kver
        assert re.search(rf"^updates/dkms/{mod}\.ko[^:]*:", dep, re.M), f"{mod} not in modules.dep"


def test_image_resolves_zfs_with_its_own_modprobe(platform, image_root):
    kver = platform.manifest["kernel"]
    res = image_root.run(["modprobe", "--show-depends", "-S", kver, "zfs"])
    assert res.returncode == 0, res.stderr
    assert "updates/dkms/spl.ko" in res.stdout and "updates/dkms/zfs.ko" in res.stdout
    # Stored plain (the squashfs compresses them): no xz to decode at each pool import.
    assert (image_root.path / f"usr/lib/modules/{kver}/updates/dkms/zfs.ko").is_file()


@pytest.mark.parametrize("mod", ["spl", "zfs"])
def test_zfs_modules_carry_no_ftrace_entry_hooks(platform, image_root, mod):
    """Each hooked function costs the kernel a walk of the module's symbol
    table when it loads the module (hooks/zfs_modules.py): 14 guest seconds
    of zfs.ko's load, at every pool import, when it had them."""
    from hooks.zfs_modules import FTRACE_SECTION, ftrace_hooks
    ko = image_root.path / f"usr/lib/modules/{platform.manifest['kernel']}/updates/dkms/{mod}.ko"
    res = subprocess.run(["readelf", "-SW", str(ko)], capture_output=True, text=True)
    assert res.returncode == 0, f"readelf -SW {ko}: {res.stderr.strip()}"
    assert " .text " in res.stdout, res.stdout  # readelf did list its sections
    assert FTRACE_SECTION not in res.stdout, f"{ko} has ftrace entry hooks"
    assert ftrace_hooks(ko) == 0


def test_no_module_in_the_root_carries_a_signature(platform, image_root):
    """hooks/kmodsig.py: the kernel would hash each at every load (and
    zfs.ko, signed by DKMS with a key no node knows, twice: 4.9 guest s at
    every pool import) only to decide how to taint itself."""
    from hooks.kmodsig import is_signed, module_files
    kver = platform.manifest["kernel"]
    files = module_files(image_root.path / "usr/lib/modules" / kver)
    assert len(files) > 1000 and any(f.name == "zfs.ko" for f in files), len(files)
    # Debian's xz, now zstd, which kmod decompresses faster than the kernel does xz.
    assert not [f for f in files if f.name.endswith(".xz")]
    assert sum(f.name.endswith(".ko.zst") for f in files) == len(files) - 2, "all but spl.ko and zfs.ko"
    signed = [f.name for f in files if is_signed(f)]
    assert not signed, f"{len(signed)} modules still signed: {signed[:5]}"
    zfs = image_root.path / f"usr/lib/modules/{kver}/updates/dkms/zfs.ko"
    res = subprocess.run(["modinfo", "-F", "version", str(zfs)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip(), f"modinfo zfs.ko: {res.stderr.strip()}"


@pytest.mark.parametrize("tool", ["usr/sbin/zpool", "usr/sbin/zfs", "usr/bin/systemd-nspawn",
                                  "usr/bin/machinectl", "usr/sbin/sshd", "usr/bin/python3",
                                  "usr/lib/systemd/systemd-networkd",
                                  "usr/bin/login", "usr/sbin/agetty"])
def test_operator_tools_are_there(image_root, tool):
    assert (image_root.path / tool).exists(), tool


def test_tools_run_in_the_image(image_root):
    res = image_root.run(["zpool", "--version"])
    assert "zfs-" in res.stdout, res.stdout + res.stderr
    assert image_root.run(["machinectl", "--version"]).returncode == 0


BUILD_ONLY = ["usr/bin/gcc", "usr/bin/cc", "usr/bin/make", "usr/sbin/dkms", "usr/bin/dkms",
              "var/lib/dkms", "usr/include/linux", "boot/vmlinuz", "vmlinuz"]
NODE_UNIQUE = ["etc/hostid", "etc/zfs/zpool.cache", "etc/ssh/ssh_host_rsa_key",
               "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ecdsa_key"]


@pytest.mark.parametrize("path", BUILD_ONLY + NODE_UNIQUE)
def test_nothing_build_only_or_node_unique(image_root, path):
    assert not (image_root.path / path).exists() and not (image_root.path / path).is_symlink(), path


def test_no_sources_headers_or_boot_dir(image_root):
    assert not any((image_root.path / "usr/src").iterdir())
    assert not (image_root.path / "boot").exists()
    for kdir in (image_root.path / "usr/lib/modules").iterdir():
        assert not (kdir / "build").exists() and not (kdir / "vmlinuz").exists()


def test_machine_id_is_empty_so_no_boot_is_a_first_boot(image_root):
    """Empty, not "uninitialized" (mkosi's) or absent: systemd makes a
    machine-id at each boot but does not take the boot for a first one, which
    would apply every unit preset again (mkosi applied them at build)."""
    assert (image_root.path / "etc/machine-id").read_bytes() == b""


def masked(root, unit):
    return any(os.readlink(p) == "/dev/null" for p in (root / "etc/systemd/system" / unit,
                                                       root / "usr/lib/systemd/system" / unit) if p.is_symlink())


def enabled_units(root):
    """Units the image starts: wanted by a target and not masked (a masked
    unit never starts, whatever wants it)."""
    units = set()
    for wants in (root / "etc/systemd/system").glob("*.wants"):
        units.update(p.name for p in wants.iterdir())
    for f in (root / "usr/lib/systemd/system").rglob("*"):
        if f.is_file() and f.name.startswith("triton-"):
            units.add(f.name)
    return sorted(u for u in units if ("@" not in u or not u.endswith("@.service")) and not masked(root, u))


@pytest.mark.parametrize("unit", ["zfs-mount.service", "zfs-volume-wait.service", "zfs-volumes.target",
                                  "systemd-network-generator.service", "nftables.service"])
def test_what_must_never_run_is_masked(image_root, unit):
    """zfs mount -a would mount a foreign pool's datasets; zvol_wait would hold
    the boot for zvols nothing uses (10 min when a link never appears); the network
    generator fails on booter's ip= (and spreads ip=...:::none to every NIC);
    nftables.service would flush the instance ports' filters."""
    assert masked(image_root.path, unit), unit


def test_units_pass_systemd_analyze_verify(image_root):
    units = enabled_units(image_root.path)
    assert "ssh.service" in units and "zfs.target" in units and "systemd-networkd.service" in units
    res = image_root.run(["systemd-analyze", "verify", "--man=no", *units])
    assert res.returncode == 0, res.stderr


def test_boot_time_work_is_done_at_build_time(image_root):
    """A stateless node would redo these at every boot."""
    assert (image_root.path / "usr/lib/udev/hwdb.bin").is_file()
    for d in ("etc", "var"):
        assert (image_root.path / d / ".updated").is_file(), f"/{d}/.updated"


def appended_cpio(initrd_bytes: bytes) -> dict[str, bytes]:
    """The files of the small uncompressed archive the build appends to
    mkosi's initrd (after its zstd frames)."""
    start = zstd_frames_end(initrd_bytes)
    assert start < len(initrd_bytes), "no appended archive in the initrd"
    return {"/" + name: content for name, mode, content in newc_entries(initrd_bytes, start)
            if mode & 0o170000 == 0o100000}


def test_pool_units_in_the_initrd_pass_systemd_analyze_verify(platform, image_root):
    """The initrd's pool units (rendered from platform.yaml) and the initrd
    units they work with, checked by the image's own systemd."""
    files = appended_cpio(platform.initrd.read_bytes())
    units = {p: d for p, d in files.items() if p.startswith("/usr/lib/systemd/system/")}
    assert "/usr/lib/systemd/system/triton-pool-import.service" in units
    assert any(p.endswith("sysroot-var.mount") for p in units)
    initrd_tree = REPO / "mkosi.initrd/mkosi.extra"
    stage = image_root.rw / "etc/systemd/system"
    names = []
    for path, data in units.items():
        target = image_root.rw / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if "/" not in path.removeprefix("/usr/lib/systemd/system/"):
            names.append(path.rsplit("/", 1)[1])
    for static in (initrd_tree / "usr/lib/systemd/system").glob("triton-*.service"):
        (stage / static.name).write_bytes(static.read_bytes())
    tool = image_root.rw / "usr/lib/triton/in-sysroot"
    tool.write_bytes((initrd_tree / "usr/lib/triton/in-sysroot").read_bytes())
    tool.chmod(0o755)
    res = image_root.run(["systemd-analyze", "verify", "--man=no", *sorted(names)])
    assert res.returncode == 0, res.stderr


def test_the_ur_agent_starts_at_boot_with_the_images_python(image_root):
    """python3-pika is in the image, the agent loads with it, and the
    preset enables its unit."""
    res = image_root.run(["/usr/lib/triton/triton_ur.py", "--help"])
    assert res.returncode == 0 and "--sysinfo-command" in res.stdout, res.stderr
    wants = image_root.path / "etc/systemd/system/multi-user.target.wants/triton-ur-agent.service"
    assert wants.is_symlink() and not masked(image_root.path, "triton-ur-agent.service")


def test_pool_settings_are_platform_yamls(image_root):
    from hooks.config import load
    assert json.loads((image_root.path / "usr/lib/triton/pool.json").read_text()) == \
        json.loads(json.dumps(load().pool.as_json()))
    res = image_root.run(["triton-pool", "--help"])
    assert res.returncode == 0 and "factory-reset" in res.stdout, res.stderr


def test_debians_pool_import_units_are_off(image_root):
    """The initrd imports the system pool; Debian's units would import every
    pool even with noimport=true."""
    units = enabled_units(image_root.path)
    assert "zfs-import-scan.service" not in units and "zfs-import-cache.service" not in units
    # ... nor its loader, which pulls in systemd-udev-settle.
    assert "zfs-load-module.service" not in units
    # Nor is any pool mounted wholesale (a foreign pool's datasets): the
    # initrd mounts the system pool's own.
    assert "zfs-mount.service" not in units
    assert (image_root.path / "etc/systemd/system/paths.target.wants/triton-persist-root.path").is_symlink()


def test_instance_unit_and_settings_are_platform_yamls(image_root):
    from hooks.config import load
    settings = load()
    assert json.loads((image_root.path / "usr/lib/triton/instances.json").read_text()) == \
        json.loads(json.dumps(settings.instances.as_json()))
    unit = (image_root.path / "usr/lib/systemd/system/triton-instance@.service").read_text()
    assert f"--directory=/{settings.pool.name}/%i/{settings.instances.root_dir}" in unit
    assert f"TimeoutStopSec={settings.instances.stop_timeout}" in unit
    res = image_root.run(["systemd-analyze", "verify", "--man=no",
                          "triton-instance@6f1c3a2b-9d8e-4f7a-b6c5-d4e3f2a1b0c9.service"])
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("tool,words", [("vmadm", "create"), ("imgadm", "import"), ("triton-pool", "setup")])
def test_node_clis_run_with_the_images_python(image_root, tool, words):
    res = image_root.run([tool, "--help"])
    assert res.returncode == 0 and words in res.stdout, res.stderr


def test_instance_generator_runs_on_a_node_without_instances(image_root):
    res = image_root.run(["sh", "-c", "mkdir -p /tmp/g && /usr/lib/systemd/system-generators/"
                          "triton-instance-generator /tmp/g /tmp/g /tmp/g && echo generated"])
    assert res.returncode == 0 and "generated" in res.stdout, res.stderr
    res = image_root.run(["sysinfo"])
    assert res.returncode == 0 and json.loads(res.stdout)["System Type"] == "Linux", res.stderr


def test_kernel_limits_allow_many_instances(image_root):
    """The kernel's default of 128 inotify instances stopped the 18th instance."""
    text = (image_root.path / "usr/lib/sysctl.d/50-triton-instances.conf").read_text()
    assert "fs.inotify.max_user_instances = 1048576" in text


# Generators the root never needs, masked (each is one more program at every
# boot and daemon-reload, ~0.25 s under TCG): systemd-ssh-generator probes
# AF_VSOCK (loading the vsock and VMCI modules, ~3 s under TCG) and fails on
# a node without a hypervisor's vsock; nodes are reached over the network.
# A stateless root has no offline updates, hibernation image, /etc/rc.local
# or SysV-only services (every init script in it has its unit), and no
# image to pull at boot; and no partition of a node's disks is mounted
# because of its GPT type (gpt-auto): the pool is the node's only state.
MASKED_GENERATORS = ["systemd-ssh-generator", "systemd-system-update-generator", "systemd-hibernate-resume-generator",
                     "systemd-rc-local-generator", "systemd-sysv-generator", "systemd-import-generator",
                     "systemd-gpt-auto-generator"]


def assert_masked(root, shipped: str, override: str) -> None:
    """`shipped` is still in the image, and the /etc file `override` masks it."""
    assert (root / shipped).exists(), f"{shipped} is no longer shipped: drop its mask"
    link = root / override
    assert link.is_symlink() and str(link.readlink()) == "/dev/null", f"{override} does not mask {shipped}"


@pytest.mark.parametrize("generator", MASKED_GENERATORS)
def test_generators_the_root_never_needs_are_masked(image_root, generator):
    assert_masked(image_root.path, f"usr/lib/systemd/system-generators/{generator}",
                  f"etc/systemd/system-generators/{generator}")


def test_zfs_vdev_alias_rule_is_masked(image_root):
    """OpenZFS's 69-vdev.rules runs its shell script vdev_id for every disk,
    partition and enclosure at each boot and uevent, to make /dev/disk/by-vdev
    aliases from /etc/zfs/vdev_id.conf. A stateless root has no such file
    (nothing puts one there), so every run only starts a shell for nothing."""
    assert_masked(image_root.path, "usr/lib/udev/rules.d/69-vdev.rules", "etc/udev/rules.d/69-vdev.rules")
    assert not (image_root.path / "etc/zfs/vdev_id.conf").exists()


def test_sysv_scripts_all_have_units(image_root):
    """What makes masking systemd-sysv-generator safe."""
    root = image_root.path
    missing = [s.name for s in (root / "etc/init.d").iterdir()
               if not any((root / d / f"{s.name}.service").exists() or (root / d / f"{s.name}.service").is_symlink()
                          for d in ("usr/lib/systemd/system", "etc/systemd/system"))]
    assert missing == [], f"init scripts without a unit (systemd-sysv-generator is masked): {missing}"


def test_nvme_over_fabrics_is_not_started_at_boot(image_root):
    """nvme-cli (for the node's own NVMe disks) enables NVMe-oF discovery,
    which loads nvme-fabrics at every boot for targets a node never has."""
    units = enabled_units(image_root.path)
    assert "nvmf-autoconnect.service" not in units
    assert "nvmefc-boot-connections.service" not in units
    assert (image_root.path / "usr/sbin/nvme").exists()


def test_nodes_python_is_byte_compiled_for_the_images_interpreter(image_root):
    """No boot compiles triton_network and friends again (the overlay would
    hold the result until reboot), and no build host's bytecode rides along."""
    tag = image_root.run(["python3", "-c", "import sys; print(sys.implementation.cache_tag)"]).stdout.strip()
    assert tag.startswith("cpython-"), tag
    lib = image_root.path / "usr/lib/triton"
    cached = {p.name for p in (lib / "__pycache__").iterdir()}
    assert cached == {f"{p.stem}.{tag}.pyc" for p in lib.glob("*.py")}
    # Importing them uses that bytecode as it is: nothing new lands in the overlay.
    res = image_root.run(["python3", "-c", "import sys; sys.path.insert(0, '/usr/lib/triton'); "
                          "import triton_network, triton_instance, triton_pool"])
    assert res.returncode == 0, res.stderr
    rewritten = image_root.workdir / "upper/usr/lib/triton/__pycache__"
    assert not rewritten.exists() or not any(rewritten.iterdir()), sorted(rewritten.iterdir())


def test_systemd_network_generator_is_not_started(image_root):
    """triton-node-config owns the network; the generator would fail on
    booter's ip=<ip>:::<mask>:: and give ip=<ip>:::<mask>:::none's address
    to every NIC."""
    assert "systemd-network-generator.service" not in enabled_units(image_root.path)


def test_usr_node_and_usr_triton_as_triton_expects_them(image_root):
    root = image_root.path
    for tool in ("usr/triton/bin/config.sh", "usr/triton/bin/json", "usr/triton/bin/zonename",
                 "usr/triton/bin/imgadm", "usr/triton/bin/vmadm", "usr/triton/bin/sdc-factoryreset",
                 "usr/triton/bin/disklayout", "usr/triton/bin/mkzpool", "usr/triton/bin/install-default-agents",
                 "usr/bin/bootparams", "usr/node/bin/node", "usr/node/bin/json", "usr/bin/uuid", "usr/sbin/ntpdate",
                 "usr/bin/ntpdig"):
        # A link is followed inside the image's root (an absolute target too).
        path = root / tool
        for _ in range(8):
            if not path.is_symlink():
                break
            target = os.readlink(path)
            path = (root / target.lstrip("/")) if target.startswith("/") else path.parent / target
        assert path.is_file() and os.access(path, os.X_OK), f"{tool} -> {path}"
    assert (root / "usr/triton/defaults/systemd.env").is_file()
    # Made at boot (a link to the pool's /opt/triton/config, or a directory in RAM).
    assert not (root / "usr/triton/config").exists()
    res = image_root.run(["/usr/node/bin/node", "-e", "console.log(process.versions.node)"])
    assert res.returncode == 0 and res.stdout.split(".")[0].isdigit(), res.stderr
    res = image_root.run(["sh", "-c", "echo '{\"UUID\": \"u\", \"MiB of Memory\": 512}' | "
                          "/usr/triton/bin/json 'MiB of Memory' && /usr/triton/bin/zonename && uuid -v4"])
    lines = res.stdout.split()
    assert res.returncode == 0 and lines[:2] == ["512", "global"] and len(lines[2]) == 36, res.stderr


def test_config_sh_and_the_config_dir_with_the_images_own_tools(image_root):
    res = image_root.run(["bash", "-c", "mkdir -p /var/tmp/node.config && "
                          "echo \"sapi_domain='sapi.dc.example' x=\\$(touch /tmp/ran)\" "
                          "> /var/tmp/node.config/node.config && "
                          ". /usr/triton/bin/config.sh && load_sdc_config && echo \"$CONFIG_sapi_domain\" && "
                          "! test -e /tmp/ran"])
    assert res.returncode == 0 and res.stdout.strip() == "sapi.dc.example", res.stdout + res.stderr
    res = image_root.run(["sh", "-c", "/usr/lib/triton/triton_configdir.py && cat /usr/triton/config/systemd.env"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PROBLEM: no node.config was delivered with this boot and the pool keeps none" in res.stdout
    assert "TRITON_AGENT_DIR=/opt/smartdc/agents" in res.stdout
