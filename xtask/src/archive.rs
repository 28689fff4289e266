//! A private apt configuration for downloading kernel packages from other Debian suites.
//!
//! The kernels under test come from suites the machine does not use (backports, the next
//! release). Adding them to the machine's own sources would change what `apt-get upgrade`
//! does on a developer's box, so the harness keeps its own sources, lists and caches under its
//! cache directory, and only ever runs `apt-cache` and `apt-get download` with them: nothing
//! is installed on the host.
//!
//! The archive URI is read from the machine's apt sources at run time. A machine reaches
//! Debian through whatever mirror its apt is set up with; naming one here would break
//! wherever that one is not reachable.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::{apt, cmd};

/// The Debian archive keyring; it verifies the suites of the current and the next release.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Settings of the machine's apt that say how to reach the archive (proxies, tolerance of a
/// mirror's clock or of an expired snapshot). The private configuration keeps these and
/// nothing else of the machine's.
const INHERITED_SETTINGS: &[&str] = &[
    "Acquire::http",
    "Acquire::https",
    "Acquire::Check-Valid-Until",
    "Acquire::Check-Date",
    "Acquire::Retries",
];

/// Package lists older than this are refreshed; the archive drops superseded kernel packages,
/// so lists that are too old name files that are gone (a failed download refreshes too).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Prefixes of the packages that make up a kernel. Debian's 6.x kernels come whole in
/// `linux-image-<release>`; newer ones are split under a `linux-image-*` metapackage into
/// `linux-binary-*` (the image), `linux-modules-*` and `linux-base-*` (config and the lists of
/// built-in drivers, which tell "built in" from "absent" when a module is not there).
const KERNEL_PACKAGE_PREFIXES: &[&str] = &[
    "linux-image-",
    "linux-binary-",
    "linux-modules-",
    "linux-base-",
];

/// A private apt configuration (sources, lists, caches) in a directory of its own.
pub struct Archive {
    dir: PathBuf,
    conf: PathBuf,
    refreshed: bool,
}

impl Archive {
    /// Sets up the configuration in `dir` for `suites` of the machine's Debian archive.
    pub fn open(dir: &Path, suites: &[&str]) -> Result<Self> {
        let uri = host_archive_uri()?;
        let empty = dir.join("empty");
        for d in [
            empty.clone(),
            dir.join("state/lists/partial"),
            dir.join("cache/archives/partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let sources: String = suites
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {uri} {s} main\n"))
            .collect();
        let sources_path = dir.join("sources.list");
        if fs::read_to_string(&sources_path).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&sources_path, &sources)?;
            // Lists of other sources are no use: refresh before the next look-up.
            let _ = fs::remove_file(dir.join("updated"));
        }
        let conf = dir.join("apt.conf");
        fs::write(
            &conf,
            private_config(dir, &sources_path, &empty)? + &inherited_settings()?,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            conf,
            refreshed: false,
        })
    }

    /// Whether the package lists were refreshed during this run.
    pub fn refreshed(&self) -> bool {
        self.refreshed
    }

    /// Refreshes the package lists if `force` is set or they are older than a day.
    pub fn refresh(&mut self, force: bool) -> Result<()> {
        let stamp = self.dir.join("updated");
        let age = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if !force && age.is_some_and(|a| a < LISTS_MAX_AGE) {
            return Ok(());
        }
        if !self.update()? {
            // Older keyrings lack the next release's keys: upgrade the machine's keyring
            // (the one package this touches on the host) and try once more.
            println!("the archive keyring lacks a suite's key: upgrading debian-archive-keyring");
            apt::install(&["debian-archive-keyring"])?;
            if !self.update()? {
                bail!("{KEYRING} cannot verify the kernel suites, even after an upgrade");
            }
        }
        fs::write(&stamp, "")?;
        self.refreshed = true;
        Ok(())
    }

    /// Runs `apt-get update`; `Ok(false)` if it failed for want of a signing key.
    fn update(&self) -> Result<bool> {
        // Without --error-on=any a suite that cannot be fetched is only a warning.
        let mut update = self.apt("apt-get");
        update.args(["update", "-q", "--error-on=any"]);
        let out = update
            .output()
            .with_context(|| format!("cannot start `{}`", cmd::display(&update)))?;
        io::stdout().write_all(&out.stdout)?;
        io::stderr().write_all(&out.stderr)?;
        if out.status.success() {
            return Ok(true);
        }
        if String::from_utf8_lossy(&out.stderr).contains("NO_PUBKEY") {
            return Ok(false);
        }
        bail!("`{}` failed ({})", cmd::display(&update), out.status)
    }

    /// The packages holding the kernel image and modules of `suite`'s `linux-image-amd64`.
    ///
    /// Resolved from the lists at run time: the archive keeps only the newest kernel of a
    /// suite, so any version written down here would soon be gone.
    pub fn kernel_packages(&self, suite: &str) -> Result<Vec<String>> {
        let root = "linux-image-amd64";
        let packages = self.dependencies_named(root, suite, KERNEL_PACKAGE_PREFIXES)?;
        if packages.is_empty() {
            bail!("{root} in {suite} depends on no kernel package");
        }
        Ok(packages)
    }

    /// The packages whose names start with one of `prefixes` among what `root` in `suite`
    /// depends on, directly or through such packages, `root` excluded.
    pub fn dependencies_named(
        &self,
        root: &str,
        suite: &str,
        prefixes: &[&str],
    ) -> Result<Vec<String>> {
        let mut seen = BTreeSet::from([root.to_owned()]);
        let mut queue = vec![root.to_owned()];
        let mut packages = Vec::new();
        while let Some(package) = queue.pop() {
            for dep in self.depends(&package, suite)? {
                let wanted = !dep.is_virtual && prefixes.iter().any(|p| dep.name.starts_with(p));
                if wanted && seen.insert(dep.name.clone()) {
                    packages.push(dep.name.clone());
                    queue.push(dep.name);
                }
            }
        }
        Ok(packages)
    }

    /// What `package` in `suite` depends on (pre-dependencies included), virtual packages too.
    pub fn depends(&self, package: &str, suite: &str) -> Result<Vec<Dependency>> {
        let out = cmd::output(
            self.apt("apt-cache")
                .args(["depends", "--no-recommends", "--no-suggests"])
                .args([
                    "--no-conflicts",
                    "--no-breaks",
                    "--no-replaces",
                    "--no-enhances",
                ])
                .arg(format!("{package}/{suite}")),
        )?;
        Ok(parse_depends(&out).collect())
    }

    /// The files (name, size) that downloading `specs` (`package/suite` or `package=version`)
    /// would give, without downloading them.
    pub fn files(&self, specs: &[String]) -> Result<Vec<(String, u64)>> {
        parse_print_uris(&cmd::output(
            self.apt("apt-get")
                .args(["download", "--print-uris"])
                .args(specs),
        )?)
    }

    /// Makes sure `dest` holds the .debs of `specs` (`package/suite` or `package=version`),
    /// downloading the ones that are missing or incomplete, and removes any other .deb there
    /// (older kernels).
    pub fn download(&self, specs: &[String], dest: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(dest)?;
        let wanted = self.files(specs)?;
        let complete = |(file, size): &(String, u64)| {
            fs::metadata(dest.join(file)).is_ok_and(|m| m.len() == *size)
        };
        let fetch: Vec<String> = wanted
            .iter()
            .filter(|w| !complete(w))
            .map(|(file, _)| {
                let package = file.split('_').next().unwrap_or(file);
                specs
                    .iter()
                    .find(|s| s.split(['/', '=']).next() == Some(package))
                    .cloned()
                    .with_context(|| format!("apt-get would download {file}, which no spec names"))
            })
            .collect::<Result<_>>()?;
        if !fetch.is_empty() {
            cmd::run(
                self.apt("apt-get")
                    .current_dir(dest)
                    .args(["download", "-q"])
                    .args(&fetch),
            )?;
        }
        if let Some((file, _)) = wanted.iter().find(|w| !complete(w)) {
            bail!(
                "apt-get download left {} incomplete",
                dest.join(file).display()
            );
        }
        for entry in fs::read_dir(dest)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let stale = name.ends_with(".deb") || name.ends_with(".FAILED");
            if stale && !wanted.iter().any(|(file, _)| *file == name) {
                fs::remove_file(dest.join(&name))?;
            }
        }
        Ok(wanted
            .into_iter()
            .map(|(file, _)| dest.join(file))
            .collect())
    }

    /// An apt command that uses this configuration and nothing of the machine's.
    fn apt(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", &self.conf);
        cmd
    }
}

/// The private configuration: apt reads `APT_CONFIG` first, and this points every other
/// configuration, source and state location away from the machine's.
fn private_config(dir: &Path, sources: &Path, empty: &Path) -> Result<String> {
    let path = |p: &Path| -> Result<String> {
        p.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not UTF-8", p.display()))
    };
    let (dir, sources, empty) = (path(dir)?, path(sources)?, path(empty)?);
    Ok(format!(
        r#"Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "{empty}";
Dir::Etc::SourceList "{sources}";
Dir::Etc::SourceParts "{empty}";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "{empty}";
Dir::State "{dir}/state";
Dir::State::Status "/dev/null";
Dir::Cache "{dir}/cache";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
Acquire::Languages "none";
APT::Sandbox::User "root";
"#
    ))
}

/// The machine's settings named in [`INHERITED_SETTINGS`], as apt configuration text.
fn inherited_settings() -> Result<String> {
    cmd::output(
        Command::new("apt-config")
            .arg("dump")
            .args(INHERITED_SETTINGS),
    )
}

/// The URI of the Debian archive that the machine's apt uses for its own release.
fn host_archive_uri() -> Result<String> {
    let os_release =
        fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    let suite = os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: is this Debian?")?;
    let mut deb822 = Vec::new();
    let mut one_line = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("sources") => deb822.push(path),
                Some("list") => one_line.push(path),
                _ => {}
            }
        }
    }
    deb822.sort();
    one_line.sort();
    let read = |p: &PathBuf| fs::read_to_string(p).unwrap_or_default();
    deb822
        .iter()
        .find_map(|p| deb822_uri(&read(p), suite))
        .or_else(|| one_line.iter().find_map(|p| one_line_uri(&read(p), suite)))
        .with_context(|| format!("no apt source of the machine serves its own suite {suite}"))
}

/// The first URI of the enabled `deb` stanza of a deb822 `.sources` file that lists `suite`.
fn deb822_uri(text: &str, suite: &str) -> Option<String> {
    let mut stanzas = vec![Vec::<(String, String)>::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanzas.last_mut().and_then(|s| s.last_mut()) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            let stanza = stanzas.last_mut()?;
            stanza.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    stanzas.iter().find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let has = |name: &str, word: &str| field(name).split_whitespace().any(|w| w == word);
        let enabled = !field("enabled").eq_ignore_ascii_case("no");
        (enabled && has("types", "deb") && has("suites", suite))
            .then(|| field("uris").split_whitespace().next().map(str::to_owned))
            .flatten()
    })
}

/// The URI of the first `deb URI suite ...` line of a one-line-style sources file for `suite`.
fn one_line_uri(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("deb ")?.trim_start();
        // Options in brackets ("[signed-by=... arch=amd64]") may hold spaces.
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| uri.to_owned())
    })
}

/// One name on a Depends or PreDepends line of `apt-cache depends`.
#[derive(Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// A virtual package (`<name>` in the output), provided by others.
    pub is_virtual: bool,
}

/// The names on `apt-cache depends` output's Depends and PreDepends lines.
fn parse_depends(out: &str) -> impl Iterator<Item = Dependency> + '_ {
    out.lines().filter_map(|line| {
        let line = line.trim().trim_start_matches('|');
        let dep = line
            .strip_prefix("Depends:")
            .or_else(|| line.strip_prefix("PreDepends:"))?
            .trim();
        let real = dep.strip_prefix('<').and_then(|d| d.strip_suffix('>'));
        Some(Dependency {
            name: real.unwrap_or(dep).to_owned(),
            is_virtual: real.is_some(),
        })
    })
}

/// The (file name, size) pairs of `apt-get download --print-uris` output, whose lines read
/// `'URI' FILE SIZE HASH`.
fn parse_print_uris(out: &str) -> Result<Vec<(String, u64)>> {
    out.lines()
        .filter(|l| l.starts_with('\''))
        .map(|line| {
            let mut words = line.split_whitespace().skip(1);
            let (Some(file), Some(size)) = (words.next(), words.next()) else {
                bail!("cannot read apt-get's download line {line:?}");
            };
            Ok((file.to_owned(), size.parse()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_picks_the_stanza_of_the_machine_suite() {
        let text = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\n";
        assert_eq!(
            deb822_uri(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            deb822_uri(text, "bookworm-security").as_deref(),
            Some("http://mirror.example/debian-security")
        );
        assert_eq!(deb822_uri(text, "trixie"), None);
    }

    #[test]
    fn deb822_skips_disabled_and_source_stanzas() {
        let text = "Types: deb-src\nURIs: http://a.example/\nSuites: bookworm\n\n\
                    Enabled: no\nTypes: deb\nURIs: http://b.example/\nSuites: bookworm\n\n\
                    Types: deb deb-src\nURIs:\n http://c.example/\n http://d.example/\n\
                    Suites: bookworm\n";
        assert_eq!(
            deb822_uri(text, "bookworm").as_deref(),
            Some("http://c.example/")
        );
    }

    #[test]
    fn one_line_sources_with_and_without_options() {
        let text = "# deb http://old.example/ bookworm main\n\
                    deb-src http://src.example/ bookworm main\n\
                    deb [ arch=amd64 signed-by=/k.gpg ] http://a.example/debian bookworm main\n";
        assert_eq!(
            one_line_uri(text, "bookworm").as_deref(),
            Some("http://a.example/debian")
        );
        let text = "deb http://b.example/debian bookworm-updates main\n";
        assert_eq!(one_line_uri(text, "bookworm"), None);
    }

    #[test]
    fn depends_tells_virtual_packages_apart() {
        let out = "linux-image-7.2.12+deb13-amd64\n  PreDepends: linux-base\n \
                   |Depends: dracut\n |Depends: <initramfs-tools>\n  Depends: <linux-initramfs-tool>\n    \
                   dracut\n  Depends: linux-binary-7.2.12+deb13-amd64\n";
        let deps: Vec<(String, bool)> =
            parse_depends(out).map(|d| (d.name, d.is_virtual)).collect();
        let expected = [
            ("linux-base", false),
            ("dracut", false),
            ("initramfs-tools", true),
            ("linux-initramfs-tool", true),
            ("linux-binary-7.2.12+deb13-amd64", false),
        ];
        assert_eq!(deps, expected.map(|(n, v)| (n.to_owned(), v)));
    }

    #[test]
    fn print_uris_gives_files_and_sizes() {
        let out = "'http://a.example/pool/linux-image-6.1.0-50-amd64_6.1.164-1_amd64.deb' \
                   linux-image-6.1.0-50-amd64_6.1.164-1_amd64.deb 70123456 SHA256:abcd\n";
        assert_eq!(
            parse_print_uris(out).unwrap(),
            [(
                "linux-image-6.1.0-50-amd64_6.1.164-1_amd64.deb".to_owned(),
                70123456
            )]
        );
    }
}
