//! The kernel matrix: stock Debian kernels, downloaded as .debs and unpacked in the cache.
//!
//! The kernel uAPI the crate uses differs across releases (docs/kernel-facts.md: syncobj on
//! virtio_gpu, SYNCOBJ_EVENTFD, udmabuf...), so the kernel tests run on one kernel of each
//! behaviour. Debian's kernels are the ones users run, and its archive is reachable from every
//! machine of the project. Nothing is installed on the host: the packages are unpacked into
//! the cache directory, which survives fresh clones on the same machine.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::archive::Archive;
use crate::cmd;
use crate::m2m::{self, M2m};

/// One kernel of the matrix: the Debian suite it comes from and the release series it is
/// known by (`--kernel 6.12`).
pub struct Suite {
    pub name: &'static str,
    pub series: &'static str,
}

/// The matrix, oldest first. The series of the newest moves with trixie-backports.
pub const MATRIX: [Suite; 3] = [
    Suite {
        name: "bookworm",
        series: "6.1",
    },
    Suite {
        name: "bookworm-backports",
        series: "6.12",
    },
    Suite {
        name: "trixie-backports",
        series: "7",
    },
];

impl Suite {
    /// Whether `selector` names this kernel: its suite, or a version that agrees with its
    /// series as far as both go ("7.2" and "7" match "7", "6.1" does not match "6.12").
    fn matches(&self, selector: &str) -> bool {
        let prefix = |long: &str, short: &str| {
            long.strip_prefix(short)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        selector == self.name || prefix(selector, self.series) || prefix(self.series, selector)
    }
}

/// The kernels named by `selectors`, in matrix order; all of them if there is none.
pub fn select(selectors: &[String]) -> Result<Vec<&'static Suite>> {
    if let Some(unknown) = selectors
        .iter()
        .find(|s| !MATRIX.iter().any(|k| k.matches(s)))
    {
        let known: Vec<String> = MATRIX
            .iter()
            .map(|k| format!("{} ({})", k.series, k.name))
            .collect();
        bail!("no kernel {unknown:?} in the matrix: {}", known.join(", "));
    }
    Ok(MATRIX
        .iter()
        .filter(|k| selectors.is_empty() || selectors.iter().any(|s| k.matches(s)))
        .collect())
}

/// An unpacked kernel, ready to boot.
pub struct Kernel {
    /// The release as `uname -r` prints it, e.g. `6.12.95+deb12-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked packages.
    pub modules: PathBuf,
    /// The memory-to-memory test drivers built for it, or why there are none.
    pub m2m: M2m,
}

/// The harness's cache: `$XDG_CACHE_HOME/fencebridge`, else `~/.cache/fencebridge`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("fencebridge"))
}

/// Downloads and unpacks kernels, re-using what earlier runs left in the cache.
pub struct Fetcher {
    archive: Archive,
    cache: PathBuf,
}

impl Fetcher {
    pub fn new() -> Result<Self> {
        let cache = cache_dir()?;
        let suites: Vec<&str> = MATRIX.iter().map(|k| k.name).collect();
        Ok(Self {
            archive: Archive::open(&cache.join("apt"), &suites)?,
            cache,
        })
    }

    /// The current kernel of `suite`, downloaded and unpacked if the cache lacks it, with its
    /// memory-to-memory test drivers (see [`m2m`]).
    pub fn fetch(&mut self, suite: &Suite) -> Result<Kernel> {
        let dir = self.cache.join("kernels").join(suite.name);
        self.archive.refresh(false)?;
        let debs = match self.download(suite, &dir) {
            Ok(debs) => debs,
            // The lists may name a kernel the archive has replaced since.
            Err(err) if !self.archive.refreshed() => {
                println!("{err:#}: refreshing the package lists and retrying");
                self.archive.refresh(true)?;
                self.download(suite, &dir)?
            }
            Err(err) => return Err(err),
        };
        let root = unpack(&dir.join("root"), &debs)?;
        let mut kernel = locate(&root)?;
        kernel.m2m = m2m::prepare(
            &self.archive,
            suite.name,
            &kernel.release,
            &debs,
            &self.cache,
        );
        Ok(kernel)
    }

    fn download(&self, suite: &Suite, dir: &Path) -> Result<Vec<PathBuf>> {
        let packages = self.archive.kernel_packages(suite.name)?;
        println!("{}: {}", suite.name, packages.join(" "));
        let specs: Vec<String> = packages
            .iter()
            .map(|p| format!("{p}/{}", suite.name))
            .collect();
        self.archive.download(&specs, dir)
    }
}

/// Unpacks `debs` into `root` unless it already holds exactly these.
pub fn unpack(root: &Path, debs: &[PathBuf]) -> Result<PathBuf> {
    let stamp = root.join(".xtask-debs");
    let names: String = debs
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| format!("{}\n", n.to_string_lossy()))
        .collect();
    if fs::read_to_string(&stamp).ok().as_deref() == Some(names.as_str()) {
        return Ok(root.to_owned());
    }
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    fs::create_dir_all(root)?;
    for deb in debs {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    }
    // Written last: an interrupted unpack is redone.
    fs::write(&stamp, names)?;
    Ok(root.to_owned())
}

/// Finds the kernel image and modules in an unpacked root (`/lib/modules` on Debian 12,
/// `/usr/lib/modules` on later releases).
fn locate(root: &Path) -> Result<Kernel> {
    let mut module_dirs = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(entries) = fs::read_dir(root.join(base)) {
            module_dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    let [modules] = module_dirs.as_slice() else {
        bail!(
            "expected one kernel's modules in {}, found {module_dirs:?}",
            root.display()
        );
    };
    let release = modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("module directory without a name")?;
    let vmlinuz = [
        root.join(format!("boot/vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("no vmlinuz for {release} in {}", root.display()))?;
    Ok(Kernel {
        release,
        vmlinuz,
        modules: modules.clone(),
        m2m: M2m::Unavailable("not looked for".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(selectors: &[&str]) -> Vec<&'static str> {
        let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
        select(&selectors).unwrap().iter().map(|k| k.name).collect()
    }

    #[test]
    fn selectors_match_series_without_prefix_confusion() {
        assert_eq!(names(&[]).len(), 3);
        assert_eq!(names(&["6.1"]), ["bookworm"]);
        assert_eq!(names(&["6.12"]), ["bookworm-backports"]);
        assert_eq!(names(&["7.2"]), ["trixie-backports"]);
        assert_eq!(names(&["6"]), ["bookworm", "bookworm-backports"]);
        assert_eq!(
            names(&["trixie-backports", "6.1"]),
            ["bookworm", "trixie-backports"]
        );
        assert!(select(&["5.10".to_owned()]).is_err());
    }
}
