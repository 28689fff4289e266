//! `cargo xtask test`'s builds against smithay's development branch.
//!
//! smithay's main branch still calls itself 0.7.0, so a compositor that takes smithay from git
//! (niri) or patches 0.7.0 to a git revision (cosmic-comp) silently builds fencebridge against
//! it. A snapshot of that branch lies beside the repository
//! (`../shared/smithay-git/smithay-<commit>.tar.xz`); this step unpacks it under
//! `target/smithay-git/` (once) and builds against it:
//! - the library (`--no-default-features --features smithay`) and the examples in its
//!   `wayland` docs: the glue a compositor writes, as doc tests (compiled, `no_run`);
//! - the kernel tests (built, not run; the VM runs them against smithay 0.7), with
//!   `--cfg smithay_git` (for them and the testkit), under which they use the branch's API where it differs from 0.7's
//!   (`delegate_dispatch2!` instead of the per-protocol `delegate_*!` macros, and
//!   `DmabufBuilder::add_plane` without a plane index);
//! - smithay's own compositor, anvil (winit backend), with fencebridge embedded by
//!   `docs/anvil-embedding.patch`.
//!
//! The repository's `Cargo.lock` is never touched: the library builds from a copy of its
//! manifest (`target/smithay-git/fencebridge/`, the sources linked) whose `[patch.crates-io]`
//! names the snapshot, so there is one smithay, as in a compositor that patches it. The builds
//! keep their own target dirs under `target/smithay-git/` between runs. Without the snapshot (a
//! clone without `../shared`) the summary says that nothing was checked.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{apt, cmd};

/// Where the snapshot lies, relative to the workspace.
const SHARED: &str = "../shared/smithay-git";

/// The embedding kept in the repository, applied to the snapshot's anvil.
const ANVIL_PATCH: &str = "docs/anvil-embedding.patch";

/// The snapshot has no lock file, and winit's betas after this one no longer build smithay's
/// winit backend.
const WINIT: &str = "0.31.0-beta.2";

/// What the step found.
pub enum Outcome {
    /// Every build succeeded.
    Passed { snapshot: String, seconds: f64 },
    /// At least one build failed: what did (why is printed where it failed).
    Failed {
        snapshot: String,
        failures: Vec<String>,
    },
    /// No snapshot to build against.
    NotChecked(String),
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Outcome::Passed { snapshot, seconds } => write!(
                f,
                "{snapshot}: library, wayland doc examples, kernel tests and anvil with \
                 fencebridge built ({seconds:.0} s)"
            ),
            Outcome::Failed { snapshot, failures } => {
                write!(f, "{snapshot}: FAILED: {} (see above)", failures.join(", "))
            }
            Outcome::NotChecked(why) => write!(f, "not checked ({why})"),
        }
    }
}

/// Builds the library, its doc examples, the kernel tests and the embedded anvil against the
/// snapshot beside `workspace`.
pub fn check(workspace: &Path) -> Outcome {
    let shared = workspace.join(SHARED);
    let tarball = match snapshot(&shared) {
        Ok(Some(tarball)) => tarball,
        Ok(None) => return Outcome::NotChecked(format!("{SHARED} has no smithay-*.tar.xz")),
        Err(_) => return Outcome::NotChecked(format!("{SHARED} absent")),
    };
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.xz"))
        .unwrap_or("smithay")
        .to_owned();
    let snapshot = format!("smithay {}", name.trim_start_matches("smithay-"));
    let started = Instant::now();
    let root = workspace.join("target/smithay-git");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut failures = Vec::new();
    let mut check = |what: &str, result: Result<()>| {
        if let Err(err) = result {
            println!("smithay development branch: {what} failed: {err:#}");
            failures.push(what.to_owned());
        }
    };
    let tree = apt::ensure(&["xz-utils", "patch"])
        .and_then(|()| unpack(&tarball, &root.join(&name), workspace, &cargo));
    let tree = match tree {
        Ok(tree) => tree,
        Err(err) => {
            check("unpacking the snapshot", Err(err));
            return Outcome::Failed { snapshot, failures };
        }
    };

    match manifest_copy(workspace, &root.join("fencebridge"), &tree) {
        Ok(copy) => {
            // The kernel and doc tests, and the testkit they build, take `--cfg smithay_git`,
            // which every crate of a build sees (RUSTFLAGS): a target dir of their own, so the
            // library's builds keep theirs.
            // Unoptimised: these builds only show that the code compiles against the snapshot
            // (the doc examples run, but do no work), and the workspace's optimised dev profile
            // is for the tests that run under emulation.
            let build_with = |target: &str, rustflags: &str, args: &[&str]| {
                let mut command = Command::new(&cargo);
                command
                    .current_dir(&copy)
                    .env("CARGO_TARGET_DIR", root.join(target))
                    .env("RUSTFLAGS", rustflags)
                    .args(["--config", "profile.dev.opt-level=0"])
                    .args(["--config", "profile.dev.package.\"*\".opt-level=0"])
                    .args(args);
                timed(&mut command)
            };
            let build = |args: &[&str]| build_with("target", "", args);
            const LIBRARY: [&str; 2] = ["--no-default-features", "--features=smithay"];
            check(
                "the library",
                build(&[&["build", "--lib"], &LIBRARY[..]].concat()).map(drop),
            );
            check(
                "the wayland doc examples",
                // Doc tests build the dev-dependencies, the testkit among them.
                build_with(
                    "target-tests",
                    "--cfg smithay_git",
                    &[&["test", "--doc"], &LIBRARY[..], &["--", "wayland"]].concat(),
                )
                .and_then(|output| match doc_tests_passed(&output) {
                    0 => bail!("no doc example of the wayland module ran"),
                    _ => Ok(()),
                }),
            );
            check(
                "the kernel tests",
                build_with(
                    "target-tests",
                    "--cfg smithay_git",
                    &[&["test", "--test", "kernel", "--no-run"], &LIBRARY[..]].concat(),
                )
                .map(drop),
            );
        }
        Err(err) => check("the manifest copy", Err(err)),
    }

    check(
        "anvil with fencebridge",
        build_anvil(workspace, &tree, &root, &cargo),
    );

    if failures.is_empty() {
        Outcome::Passed {
            snapshot,
            seconds: started.elapsed().as_secs_f64(),
        }
    } else {
        Outcome::Failed { snapshot, failures }
    }
}

/// The newest `smithay-*.tar.xz` in `shared`; an error if `shared` cannot be read.
fn snapshot(shared: &Path) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(shared)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("smithay-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    Ok(found.pop())
}

/// Unpacks the snapshot into `dir` unless it is there already, and prepares its workspace:
/// `[patch.crates-io]` entries so that fencebridge and anvil share the snapshot's smithay and
/// anvil finds this fencebridge, and a lock file with a winit that builds. Returns the tree.
fn unpack(
    tarball: &Path,
    dir: &Path,
    workspace: &Path,
    cargo: &std::ffi::OsStr,
) -> Result<PathBuf> {
    let tree = dir.join("smithay");
    let stamp = dir.join(".unpacked");
    let stamp_text = format!("{}\n{}\n", tarball.display(), workspace.display());
    if fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_text) {
        return Ok(tree);
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    println!("unpacking {} into {}", tarball.display(), dir.display());
    cmd::run(
        Command::new("tar")
            .arg("-xJf")
            .arg(tarball)
            .arg("-C")
            .arg(dir),
    )?;
    let mut manifest = fs::OpenOptions::new()
        .append(true)
        .open(tree.join("Cargo.toml"))?;
    write!(
        manifest,
        "\n# cargo xtask test: one smithay (this one), and the fencebridge under test.\n\
         [patch.crates-io]\nsmithay = {{ path = \".\" }}\nfencebridge = {{ path = {:?} }}\n",
        workspace.display().to_string()
    )?;
    drop(manifest);
    cmd::run(
        Command::new(cargo)
            .current_dir(&tree)
            .arg("generate-lockfile"),
    )?;
    cmd::run(Command::new(cargo).current_dir(&tree).args([
        "update",
        "-p",
        "winit",
        "--precise",
        WINIT,
    ]))?;
    fs::write(&stamp, stamp_text)?;
    Ok(tree)
}

/// A manifest copy in `copy` whose `[patch.crates-io]` names the snapshot's smithay, with the
/// workspace's files linked beside it, and a lock file of its own (first copied from the
/// workspace's).
fn manifest_copy(workspace: &Path, copy: &Path, tree: &Path) -> Result<PathBuf> {
    fs::create_dir_all(copy)?;
    for entry in fs::read_dir(copy)? {
        let link = entry?.path();
        if fs::symlink_metadata(&link)?.is_symlink() && !link.exists() {
            fs::remove_file(&link)?;
        }
    }
    for entry in fs::read_dir(workspace)? {
        let name = entry?.file_name();
        if ["target", ".git", "Cargo.toml", "Cargo.lock"]
            .map(std::ffi::OsStr::new)
            .contains(&name.as_os_str())
        {
            continue;
        }
        let link = copy.join(&name);
        let target = workspace.join(&name);
        // A link left by another checkout (a target directory copied from it) would build that
        // checkout's sources.
        if fs::symlink_metadata(&link).is_ok() && fs::read_link(&link).ok() != Some(target.clone())
        {
            fs::remove_file(&link)?;
        }
        if fs::symlink_metadata(&link).is_err() {
            symlink(&target, &link)?;
        }
    }
    let manifest = fs::read_to_string(workspace.join("Cargo.toml"))?;
    let manifest = format!(
        "{manifest}\n# cargo xtask test: built against smithay's development branch.\n\
         [patch.crates-io]\nsmithay = {{ path = {:?} }}\n",
        tree.display().to_string()
    );
    // Written only when it changes: a new mtime makes cargo rebuild the package.
    if fs::read_to_string(copy.join("Cargo.toml")).ok().as_deref() != Some(&manifest) {
        fs::write(copy.join("Cargo.toml"), manifest)?;
    }
    if !copy.join("Cargo.lock").exists() {
        fs::copy(workspace.join("Cargo.lock"), copy.join("Cargo.lock"))?;
    }
    Ok(copy.to_owned())
}

/// Applies the embedding patch to the snapshot's anvil (reverting the one applied before, if it
/// changed) and builds anvil with its winit backend.
fn build_anvil(workspace: &Path, tree: &Path, root: &Path, cargo: &std::ffi::OsStr) -> Result<()> {
    let patch = fs::read_to_string(workspace.join(ANVIL_PATCH))
        .with_context(|| format!("reading {ANVIL_PATCH}"))?;
    let applied_file = tree.with_file_name("anvil-embedding.applied");
    let applied = fs::read_to_string(&applied_file).unwrap_or_default();
    if applied != patch {
        if !applied.is_empty() {
            run_patch(tree, &applied, true).context(
                "reverting the previous embedding patch (remove target/smithay-git to start afresh)",
            )?;
            fs::remove_file(&applied_file)?;
        }
        run_patch(tree, &patch, false)
            .with_context(|| format!("{ANVIL_PATCH} does not apply to the snapshot's anvil"))?;
        fs::write(&applied_file, &patch)?;
    }
    timed(
        Command::new(cargo)
            .current_dir(tree)
            .env("CARGO_TARGET_DIR", root.join("anvil-target"))
            .args([
                "build",
                "-p",
                "anvil",
                "--no-default-features",
                "--features",
                "winit",
            ]),
    )
    .map(drop)
}

/// `patch -p1` (or `-R`) in `tree`, the patch on stdin.
fn run_patch(tree: &Path, patch: &str, reverse: bool) -> Result<()> {
    let mut command = Command::new("patch");
    command
        .current_dir(tree)
        .args(["-p1", "--no-backup-if-mismatch", "--quiet"])
        .arg(if reverse { "--reverse" } else { "--forward" })
        .stdin(Stdio::piped());
    let mut child = command.spawn().context("cannot start `patch`")?;
    child
        .stdin
        .take()
        .context("patch's stdin")?
        .write_all(patch.as_bytes())?;
    if !child.wait()?.success() {
        bail!("`patch{}` failed", if reverse { " --reverse" } else { "" });
    }
    Ok(())
}

/// Runs a build, shows and returns its stdout, and says how long it took.
fn timed(command: &mut Command) -> Result<String> {
    let started = Instant::now();
    let output = cmd::output(command)?;
    print!("{output}");
    println!(
        "`{}` took {:.1} s",
        cmd::display(command),
        started.elapsed().as_secs_f64()
    );
    Ok(output)
}

/// The doc tests that passed, from libtest's `test result:` line.
fn doc_tests_passed(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_snapshot_the_summary_says_nothing_was_checked() {
        // A clone with nothing beside it.
        let workspace = std::env::temp_dir().join(format!(
            "fencebridge-clone-{}/fencebridge",
            std::process::id()
        ));
        fs::create_dir_all(&workspace).unwrap();
        let outcome = check(&workspace);
        fs::remove_dir_all(workspace.parent().unwrap()).unwrap();
        assert!(!outcome.failed());
        assert_eq!(
            outcome.to_string(),
            "not checked (../shared/smithay-git absent)"
        );
    }

    #[test]
    fn the_manifest_copy_links_this_checkout_not_the_one_before() {
        let root = std::env::temp_dir().join(format!("fencebridge-links-{}", std::process::id()));
        let (before, now, copy) = (root.join("before"), root.join("now"), root.join("copy"));
        for workspace in [&before, &now] {
            fs::create_dir_all(workspace.join("src")).unwrap();
            fs::write(workspace.join("Cargo.toml"), "[package]\n").unwrap();
            fs::write(workspace.join("Cargo.lock"), "").unwrap();
        }
        manifest_copy(&before, &copy, Path::new("/snapshot")).unwrap();
        manifest_copy(&now, &copy, Path::new("/snapshot")).unwrap();
        let linked = fs::read_link(copy.join("src")).unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(linked, now.join("src"));
    }

    #[test]
    fn doc_tests_are_counted_from_libtest_result_lines() {
        let output = "running 2 tests\ntest src/wayland/mod.rs - wayland (line 32) - compile ... ok\n\
                      test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 16 filtered out\n";
        assert_eq!(doc_tests_passed(output), 2);
        assert_eq!(
            doc_tests_passed("test result: ok. 0 passed; 0 failed;\n"),
            0
        );
    }

    #[test]
    fn a_failure_names_what_did_not_build() {
        let outcome = Outcome::Failed {
            snapshot: "smithay 5fb12b87".to_owned(),
            failures: vec![
                "the library".to_owned(),
                "anvil with fencebridge".to_owned(),
            ],
        };
        assert!(outcome.failed());
        assert_eq!(
            outcome.to_string(),
            "smithay 5fb12b87: FAILED: the library, anvil with fencebridge (see above)"
        );
    }
}
