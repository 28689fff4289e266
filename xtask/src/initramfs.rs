//! The guest's initramfs: static busybox, `/init`, the kernel modules a run asks for (with
//! their dependencies, decompressed) and the run's own files, as one uncompressed newc cpio.
//!
//! Built afresh for every boot in well under a second, so there is no cache to invalidate.
//! Left uncompressed: qemu hands it to the kernel from memory, where compressing it would only
//! cost time on both sides.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernels::Kernel;
use crate::m2m;

/// The guest's `/init`, a busybox shell script.
const INIT: &str = include_str!("../guest/init.sh");

/// Modules loaded before the requested ones: the host-root mount (9p over virtio) needs them,
/// and Debian 6.1 builds virtio_pci as a module, without which no virtio device appears.
/// Whichever of these a kernel has built in is simply skipped.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// A built initramfs.
pub struct Initramfs {
    pub image: Vec<u8>,
    /// What became of requested modules that are not loadable (built in, or absent).
    pub notes: Vec<String>,
}

/// Builds the initramfs for `kernel` with `modules` (loaded in dependency order by `/init`,
/// listed in `/lib/modules/load.order`) and `files` (path in the guest, contents).
pub fn build(kernel: &Kernel, modules: &[String], files: &[(&str, &[u8])]) -> Result<Initramfs> {
    let busybox = which("busybox").context("no busybox on PATH (package busybox-static)")?;
    let index = ModuleIndex::read(kernel)?;
    let mut loader = Loader {
        index: &index,
        done: BTreeSet::new(),
        order: Vec::new(),
    };
    let mut notes = Vec::new();
    for name in BOOT_MODULES {
        loader.load(name)?;
    }
    for name in modules {
        let name = name.replace('-', "_");
        if !loader.load(&name)? {
            notes.push(if index.builtin.contains(&name) {
                format!("module {name}: built into {}", kernel.release)
            } else if m2m::DRIVERS.contains(&name.as_str()) {
                format!("module {name}: {}", kernel.m2m.why_absent())
            } else {
                format!("module {name}: not in {}", kernel.release)
            });
        }
    }

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "newroot",
        "hosttmp",
        "lib",
        "lib/modules",
        "xtask",
    ] {
        cpio.dir(dir);
    }
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut order = String::new();
    for (name, image) in &loader.order {
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, image);
        order.push_str(name);
        order.push('\n');
    }
    cpio.file("lib/modules/load.order", 0o644, order.as_bytes());
    for (path, contents) in files {
        cpio.file(path, 0o644, contents);
    }
    Ok(Initramfs {
        image: cpio.finish(),
        notes,
    })
}

/// The loadable modules of one kernel, by name (with `-` spelt `_`, as the kernel does).
struct ModuleIndex {
    paths: HashMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// The kernel's own modules, and those built for it out of tree (the m2m drivers).
    fn read(kernel: &Kernel) -> Result<Self> {
        let dir = &kernel.modules;
        let mut paths = HashMap::new();
        let mut pending = vec![dir.join("kernel")];
        while let Some(dir) = pending.pop() {
            let entries =
                fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Some(name) = module_name(&path) {
                    paths.insert(name, path);
                }
            }
        }
        if let Some(extra) = kernel.m2m.modules_dir() {
            for entry in fs::read_dir(extra)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "ko") {
                    if let Some(name) = module_name(&path) {
                        // The kernel's own module wins, should a kernel ever ship one.
                        paths.entry(name).or_insert(path);
                    }
                }
            }
        }
        // Built-in drivers: modules.builtin lists those that could have been modules, by the
        // path they would have; modules.builtin.modinfo has the `name.key=value` strings of
        // every built-in driver with module info, bool-only ones (udmabuf) included.
        let mut builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect();
        let modinfo = fs::read(dir.join("modules.builtin.modinfo")).unwrap_or_default();
        builtin.extend(
            modinfo
                .split(|&b| b == 0)
                .filter_map(|entry| entry.split(|&b| b == b'.').next())
                .filter(|name| !name.is_empty())
                .map(|name| String::from_utf8_lossy(name).replace('-', "_")),
        );
        Ok(Self { paths, builtin })
    }
}

/// `foo-bar.ko.xz` → `foo_bar`.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let (name, _) = file.split_once(".ko")?;
    Some(name.replace('-', "_"))
}

/// Collects modules and their dependencies, dependencies first.
struct Loader<'a> {
    index: &'a ModuleIndex,
    done: BTreeSet<String>,
    order: Vec<(String, Vec<u8>)>,
}

impl Loader<'_> {
    /// Adds `name` and what it depends on; false if the kernel has no such loadable module.
    fn load(&mut self, name: &str) -> Result<bool> {
        if !self.done.insert(name.to_owned()) {
            return Ok(true);
        }
        let Some(path) = self.index.paths.get(name) else {
            return Ok(false);
        };
        let image = decompress(path)?;
        for dep in depends(&image) {
            self.load(&dep)?;
        }
        self.order.push((name.to_owned(), image));
        Ok(true)
    }
}

/// A module file's ELF image: Debian compresses modules with xz, and may use zstd.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return Ok(fs::read(path)?),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => bail!("unknown module compression: {}", path.display()),
    };
    let out = Command::new(tool).arg("-dc").arg(path).output();
    match out {
        Ok(out) if out.status.success() => Ok(out.stdout),
        _ => bail!("`{tool} -dc {}` failed", path.display()),
    }
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated `key=value` strings).
fn depends(image: &[u8]) -> Vec<String> {
    image
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A writer of the "new ASCII" (newc) cpio format, the one the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inodes: u32,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        self.entry(path, 0o040_755, b"");
    }

    fn file(&mut self, path: &str, mode: u32, contents: &[u8]) {
        self.entry(path, 0o100_000 | mode, contents);
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.entry(path, 0o120_777, target.as_bytes());
    }

    fn entry(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.inodes += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let size = u32::try_from(data.len()).expect("initramfs files are far below 4 GiB");
        let name_size = path.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check
        let fields = [
            self.inodes,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name_size,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(path.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in an archive, as busybox's `cpio -t` reads them.
    fn list_with_busybox(image: &[u8]) -> Result<String> {
        use std::io::Write;
        use std::process::Stdio;
        let busybox = which("busybox").context("no busybox")?;
        let mut child = Command::new(busybox)
            .args(["cpio", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(image)?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8(out.stdout)?)
    }

    #[test]
    fn module_names_are_normalised() {
        let path = Path::new("kernel/drivers/media/vivid-core.ko.xz");
        assert_eq!(module_name(path).as_deref(), Some("vivid_core"));
        assert_eq!(
            module_name(Path::new("drivers/x/y.ko")).as_deref(),
            Some("y")
        );
        assert_eq!(module_name(Path::new("modules.order")), None);
    }

    #[test]
    fn depends_reads_modinfo() {
        let image = b"\x7fELF junk\0license=GPL\0depends=drm,drm_kms-helper\0vermagic=6.1\0";
        assert_eq!(depends(image), ["drm", "drm_kms_helper"]);
        assert!(depends(b"\0depends=\0name=vgem\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }

    #[test]
    fn cpio_entries_are_aligned_and_listable() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.file("bin/a", 0o644, b"hello");
        cpio.symlink("bin/sh", "busybox");
        let image = cpio.finish();
        assert!(image.len().is_multiple_of(4));
        assert!(image.starts_with(b"070701"));
        if which("busybox").is_some() {
            assert_eq!(list_with_busybox(&image).unwrap(), "bin\nbin/a\nbin/sh\n");
        }
    }
}
