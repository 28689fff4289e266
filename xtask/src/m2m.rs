//! The kernel's memory-to-memory (m2m) V4L2 test drivers, built out of tree for each kernel of
//! the matrix: `v4l2-mem2mem` (the m2m framework), `vicodec` (a stateful FWHT encoder, a
//! stateful decoder and a stateless Request-API decoder) and `vim2m` (a scaler/converter).
//!
//! Real video decoders (hantro, rkvdec, cedrus, coda, venus...) are m2m devices, but Debian's
//! amd64 kernels ship none, not even the framework (`CONFIG_V4L2_MEM2MEM_DEV` is unset). Their
//! sources are in Debian's `linux-source-<series>`, and `linux-headers-<release>` builds them
//! against the very kernel under test. Nothing is installed on the host: the packages are
//! unpacked into the cache, the three `.ko` files are kept there per kernel release, and
//! everything else is removed once they are built.
//!
//! Out-of-tree modules must be built with the kernel's own compiler (its flags are that
//! compiler's, and so are the build tools of its `linux-kbuild` package): a kernel whose
//! compiler the host lacks gets no m2m drivers, and the run says why.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::archive::Archive;
use crate::{cmd, initramfs, kernels};

/// The drivers a run asks for by default; `v4l2_mem2mem` comes with them as their dependency.
pub const DRIVERS: [&str; 2] = ["vicodec", "vim2m"];

/// The environment variable listing the m2m drivers a run loads, whose devices must be there.
pub const ENV_LOADED: &str = "FENCEBRIDGE_M2M_MODULES";
/// The environment variable saying why a kernel has no m2m drivers.
pub const ENV_ABSENT: &str = "FENCEBRIDGE_M2M_ABSENT";

/// Out-of-tree kbuild for the three modules, from the folder holding their sources.
const MAKEFILE: &str = "obj-m += v4l2-mem2mem.o vicodec.o vim2m.o\n\
    vicodec-objs := vicodec-core.o codec-fwht.o codec-v4l2-fwht.o\n";

/// The sources in `linux-source-<series>.tar.xz`.
const SOURCES: [&str; 3] = [
    "linux-source-*/drivers/media/v4l2-core/v4l2-mem2mem.c",
    "linux-source-*/drivers/media/test-drivers/vicodec/*",
    "linux-source-*/drivers/media/test-drivers/vim2m.c",
];

/// What is cached for a release is rebuilt when the packages change, or when this does.
const RECIPE: &str = "m2m recipe 1";

/// The m2m drivers of one kernel.
pub enum M2m {
    /// Built; the `.ko` files are in this folder.
    Built(PathBuf),
    /// This host cannot build them for this kernel, and why.
    Unavailable(String),
    /// Building them failed, and why: the suite fails, and the tests that need them too.
    Failed(String),
}

impl M2m {
    /// The folder of the built modules, if any.
    pub fn modules_dir(&self) -> Option<&Path> {
        match self {
            Self::Built(dir) => Some(dir),
            _ => None,
        }
    }

    /// Why a module of [`DRIVERS`] is not loadable.
    pub fn why_absent(&self) -> String {
        match self {
            Self::Built(dir) => format!("not among the modules built in {}", dir.display()),
            Self::Unavailable(why) => why.clone(),
            Self::Failed(why) => format!("the build failed: {why}"),
        }
    }

    /// The guest's variable that tells the kernel tests what to expect of a run loading
    /// `modules`: [`ENV_LOADED`] with the m2m drivers it loads (expected even when their
    /// build failed, so that the tests fail instead of skipping), or [`ENV_ABSENT`] with why
    /// there are none.
    pub fn guest_env(&self, modules: &[String]) -> (&'static str, String) {
        let requested: Vec<&str> = DRIVERS
            .into_iter()
            .filter(|d| modules.iter().any(|m| m.replace('-', "_") == *d))
            .collect();
        match self {
            Self::Unavailable(why) => (ENV_ABSENT, why.clone()),
            _ if requested.is_empty() => (
                ENV_ABSENT,
                "this run loads none of them (its --module list)".to_owned(),
            ),
            _ => (ENV_LOADED, requested.join(" ")),
        }
    }
}

/// The m2m drivers for the kernel `release` of `suite` (unpacked from `kernel_debs`), from the
/// cache or built into it.
/// Prints a line when it builds, or when the kernel can have none; a failure is returned.
pub fn prepare(
    archive: &Archive,
    suite: &str,
    release: &str,
    kernel_debs: &[PathBuf],
    cache: &Path,
) -> M2m {
    let dir = cache.join("m2m").join(release);
    let started = Instant::now();
    match build(archive, suite, release, kernel_debs, &dir) {
        Ok(Outcome::Cached(dir)) => M2m::Built(dir),
        Ok(Outcome::Fresh(dir)) => {
            println!(
                "{release}: built v4l2-mem2mem, vicodec and vim2m in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            M2m::Built(dir)
        }
        Ok(Outcome::Unavailable(why)) => {
            println!("{release}: no m2m test drivers (vicodec, vim2m): {why}");
            M2m::Unavailable(why)
        }
        Err(err) => {
            let why = format!("{err:#}");
            println!("{release}: building the m2m test drivers failed: {why}");
            M2m::Failed(why)
        }
    }
}

enum Outcome {
    Cached(PathBuf),
    Fresh(PathBuf),
    Unavailable(String),
}

fn build(
    archive: &Archive,
    suite: &str,
    release: &str,
    kernel_debs: &[PathBuf],
    dir: &Path,
) -> Result<Outcome> {
    // The kernel's packages say which upload it is: while they stay, so does what was built
    // for it, and nothing needs asking apt (a second or more per question).
    let key: String = std::iter::once(RECIPE.to_owned())
        .chain(kernel_debs.iter().map(|deb| file_name(deb)))
        .map(|line| format!("{line}\n"))
        .collect();
    let headers = format!("linux-headers-{release}");
    let compiler_path = dir.join("compiler");
    let compiler = match fs::read_to_string(&compiler_path)
        .ok()
        .and_then(|text| Some(text.strip_prefix(&key)?.trim().to_owned()))
    {
        Some(compiler) => compiler,
        None => {
            let compiler = archive
                .depends(&headers, suite)?
                .iter()
                .find_map(|dep| compiler(&dep.name))
                .with_context(|| format!("{headers} in {suite} names no gcc"))?;
            fs::create_dir_all(dir)?;
            fs::write(&compiler_path, format!("{key}{compiler}\n"))?;
            compiler
        }
    };
    if initramfs::which(&compiler).is_none() {
        return Ok(Outcome::Unavailable(format!(
            "the kernel was built with {compiler}, which this host lacks (out-of-tree modules \
             must be built with the kernel's own compiler)"
        )));
    }
    let build_dir = dir.join("build");
    let stamp_path = build_dir.join(".xtask-m2m");
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(key.as_str()) {
        return Ok(Outcome::Cached(build_dir));
    }

    // The headers and sources of exactly the kernel's upload.
    let version = kernel_debs
        .iter()
        .map(|deb| file_name(deb))
        .find_map(|name| {
            let version = name.strip_prefix(&format!("linux-image-{release}_"))?;
            Some(version.split('_').next()?.to_owned())
        })
        .with_context(|| format!("no linux-image-{release} among {kernel_debs:?}"))?;
    let mut specs = vec![
        format!("{headers}={version}"),
        format!("linux-source-{}={version}", series(release)?),
    ];
    specs.extend(
        archive
            .dependencies_named(&headers, suite, &["linux-headers-", "linux-kbuild-"])?
            .iter()
            .map(|p| format!("{p}/{suite}")),
    );

    println!("{release}: building the m2m test drivers (v4l2-mem2mem, vicodec, vim2m)");
    remove(dir, &["build", "debs", "root", "src"])?;
    let debs = archive.download(&specs, &dir.join("debs"))?;
    let (sources, packages): (Vec<PathBuf>, Vec<PathBuf>) = debs
        .into_iter()
        .partition(|deb| file_name(deb).starts_with("linux-source-"));
    let root = kernels::unpack(&dir.join("root"), &packages)?;
    let headers_dir = root.join("usr/src").join(&headers);
    relocate_makefile(&headers_dir.join("Makefile"), &root)?;
    let [source] = sources.as_slice() else {
        bail!("expected one linux-source package, got {sources:?}");
    };
    extract_sources(source, &dir.join("src"), &build_dir)?;
    fs::write(build_dir.join("Makefile"), MAKEFILE)?;
    make(&headers_dir, &build_dir)?;
    for module in ["v4l2-mem2mem", "vicodec", "vim2m"] {
        let ko = build_dir.join(format!("{module}.ko"));
        if !ko.exists() {
            bail!("the build made no {}", ko.display());
        }
    }
    // Only the build folder is kept: the packages (the source alone is over 150 MB) are
    // downloaded again if the kernel changes.
    remove(dir, &["debs", "root", "src"])?;
    fs::write(&stamp_path, key)?;
    Ok(Outcome::Fresh(build_dir))
}

/// The compiler named by a dependency of a headers package: `gcc-12`,
/// `linux-compiler-gcc-12-x86` (6.1) and `gcc-14-for-host` (7.x) all name theirs.
fn compiler(package: &str) -> Option<String> {
    let at = package.find("gcc-")? + "gcc-".len();
    let digits: String = package[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("gcc-{digits}"))
}

/// The series of `linux-source-<series>` for a release: `6.1.0-50-amd64` → `6.1`.
fn series(release: &str) -> Result<String> {
    let mut numbers = release.split(['.', '-', '+']);
    match (numbers.next(), numbers.next()) {
        (Some(major), Some(minor))
            if [major, minor]
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            Ok(format!("{major}.{minor}"))
        }
        _ => bail!("no series in the kernel release {release:?}"),
    }
}

/// Debian's headers `Makefile` reaches the `-common` headers (and names its output folder)
/// by absolute `/usr/src/` paths: points them into the unpacked `root`.
fn relocate_makefile(makefile: &Path, root: &Path) -> Result<()> {
    let text = fs::read_to_string(makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let usr_src = format!("{}/usr/src/", root.display());
    let relocated = text
        .replace(" /usr/src/", &format!(" {usr_src}"))
        .replace("=/usr/src/", &format!("={usr_src}"));
    fs::write(makefile, relocated)?;
    Ok(())
}

/// Unpacks the drivers' sources from the source package (a tarball inside the .deb) into
/// `scratch`, and copies them, flat, into `build`.
fn extract_sources(deb: &Path, scratch: &Path, build: &Path) -> Result<()> {
    fs::create_dir_all(scratch)?;
    fs::create_dir_all(build)?;
    let script = r#"set -o pipefail
deb=$1 dest=$2; shift 2
dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' \
  | tar -xJ -C "$dest" --wildcards "$@""#;
    cmd::run(
        Command::new("bash")
            .args(["-c", script, "extract"])
            .arg(deb)
            .arg(scratch)
            .args(SOURCES),
    )?;
    let mut copied = 0;
    let mut pending = vec![scratch.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "c" || e == "h") {
                fs::copy(&path, build.join(file_name(&path)))?;
                copied += 1;
            }
        }
    }
    if copied == 0 {
        bail!("no driver sources in {}", deb.display());
    }
    Ok(())
}

/// Runs kbuild for the out-of-tree folder `build`; quiet unless it fails. BTF for modules is
/// left out: it needs pahole (package dwarves), and nothing here reads it.
fn make(headers: &Path, build: &Path) -> Result<()> {
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(headers)
        .arg(format!("M={}", build.display()))
        .args(["-j2", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"]);
    let out = make
        .output()
        .with_context(|| format!("cannot start `{}`", cmd::display(&make)))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`{}` failed ({}):\n{}",
            cmd::display(&make),
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Removes the `folders` of `dir` that exist.
fn remove(dir: &Path, folders: &[&str]) -> Result<()> {
    for folder in folders {
        let path = dir.join(folder);
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiler_is_read_from_the_headers_dependencies() {
        assert_eq!(compiler("gcc-12").as_deref(), Some("gcc-12"));
        assert_eq!(
            compiler("linux-compiler-gcc-12-x86").as_deref(),
            Some("gcc-12")
        );
        assert_eq!(compiler("gcc-14-for-host").as_deref(), Some("gcc-14"));
        assert_eq!(compiler("linux-kbuild-6.1"), None);
        assert_eq!(compiler("gcc-"), None);
    }

    #[test]
    fn the_source_series_is_the_release_major_and_minor() {
        assert_eq!(series("6.1.0-50-amd64").unwrap(), "6.1");
        assert_eq!(series("6.12.95+deb12-amd64").unwrap(), "6.12");
        assert_eq!(series("7.3.4+deb13-amd64").unwrap(), "7.3");
        assert!(series("amd64").is_err());
    }

    #[test]
    fn the_guest_is_told_what_to_expect() {
        let built = M2m::Built(PathBuf::from("/c"));
        let defaults: Vec<String> = ["vgem", "vivid", "vicodec", "vim2m"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            built.guest_env(&defaults),
            (ENV_LOADED, "vicodec vim2m".to_owned())
        );
        // A failed build still expects the devices, so that their tests fail.
        let failed = M2m::Failed("make failed".to_owned());
        assert_eq!(failed.guest_env(&defaults).0, ENV_LOADED);
        let absent = M2m::Unavailable("built with gcc-14".to_owned());
        assert_eq!(
            absent.guest_env(&defaults),
            (ENV_ABSENT, "built with gcc-14".to_owned())
        );
        assert_eq!(built.guest_env(&["vgem".to_owned()]).0, ENV_ABSENT);
    }

    #[test]
    fn the_headers_makefile_is_pointed_into_the_cache() {
        let dir = std::env::temp_dir().join(format!("xtask-m2m-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let makefile = dir.join("Makefile");
        fs::write(
            &makefile,
            "KBUILD_OUTPUT=/usr/src/linux-headers-7-amd64\n\
             include /usr/src/linux-headers-7-common/Makefile\n",
        )
        .unwrap();
        let root = Path::new("/c/root");
        relocate_makefile(&makefile, root).unwrap();
        // twice: a rewritten Makefile stays as it is
        relocate_makefile(&makefile, root).unwrap();
        assert_eq!(
            fs::read_to_string(&makefile).unwrap(),
            "KBUILD_OUTPUT=/c/root/usr/src/linux-headers-7-amd64\n\
             include /c/root/usr/src/linux-headers-7-common/Makefile\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
