//! The reference compositor's window backend (feature `winit`), on the host: a real X server
//! (Xvfb, through `xvfb-run`) and Mesa's GLES (llvmpipe), no GPU needed. `fbclient shm` judges
//! every frame through wlr-screencopy (read back from GL); `xwd` reads the X server's own
//! pixels, which is what a user of the window sees.
//!
//! `cargo xtask test` builds the examples first and installs xvfb, x11-apps (xwd) and Mesa.

use std::path::Path;
use std::process::Command;

use fencebridge_testkit::nested::{self, built, count, scratch};

/// fbclient's tag: its colours have this red byte (nested's background has 0x20, X's root 0).
const TAG: u8 = 5;
const RED: u32 = 0x80 | TAG as u32;

/// Runs `nested --backend winit ARGS` under Xvfb with `fbclient shm` (160×120, 60 frames),
/// and dumps the X screen with `xwd` two seconds in, while the client draws.
fn window_with_fbclient(test: &str, args: &[&str]) -> (nested::Run, Xwd) {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v xvfb-run && command -v xwd"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "xvfb-run and xwd are missing: apt-get install xvfb x11-apps (cargo xtask test does it)"
    );
    let dir = scratch(test);
    let root = dir.join("root.xwd");
    let shot = dir.join("shot.sh");
    std::fs::write(
        &shot,
        format!("sleep 2\nexec xwd -root -silent -out {}\n", root.display()),
    )
    .unwrap();
    let fbclient = format!(
        "{} shm --frames 60 --interval-ms 40 --size 160x120 --tag {TAG}",
        built("fbclient").display()
    );
    let mut xvfb = Command::new("xvfb-run");
    xvfb.args(["-a", "-s", "-screen 0 800x600x24 -nolisten tcp"])
        .arg(built("nested"))
        .env_remove("WAYLAND_DISPLAY");
    let clients = [fbclient, format!("sh {}", shot.display())];
    let args: Vec<&str> = ["--backend", "winit"].iter().chain(args).copied().collect();
    let run = nested::run(xvfb, &dir, 60, &args, &clients);
    assert_eq!(run.report["backend"], "winit", "{}", run.report);
    let image = Xwd::read(&root);
    (run, image)
}

#[test]
fn a_window_shows_a_cpu_client_upright_and_releases_its_buffers() {
    let (run, image) = window_with_fbclient("window-shm", &[]);

    // Every frame shown, right side up, and the client got its buffers back (it has two), each
    // with the commit that replaced it (GLES copied it); each frame's wp_presentation feedback
    // said presented, between its commit and its arrival.
    let result = run.fbclient("shm");
    assert_eq!(
        [
            "frames",
            "stale",
            "upside_down",
            "presented",
            "replaced_busy"
        ]
        .map(|key| count(&result, key)),
        [60, 0, 0, 60, 0],
        "{result:?}"
    );
    let client = run.client("fbclient");
    assert_eq!(client["frames_shown"], 60, "{client}");
    assert_eq!(client["commits"]["shm"], 60, "{client}");
    assert_eq!(client["protocol_errors"], serde_json::json!([]), "{client}");

    // What the X server shows: the client's window at the output's top left, upright. Its
    // quadrants are told apart by their colour (4 × frame + quadrant + 1) modulo 4, whatever
    // frame was on screen.
    let ours: Vec<(u32, u32)> = (0..image.height)
        .flat_map(|y| (0..image.width).map(move |x| (x, y)))
        .filter(|&(x, y)| image.pixel(x, y) >> 16 & 0xff == RED)
        .collect();
    assert_eq!(ours.len(), 160 * 120, "the window's pixels on the X screen");
    assert_eq!((ours[0], ours[ours.len() - 1]), ((0, 0), (159, 119)));
    let quadrant = |x, y| (image.pixel(x, y) & 0xffff).wrapping_sub(1) % 4;
    assert_eq!(
        [
            quadrant(10, 10),
            quadrant(150, 10),
            quadrant(10, 110),
            quadrant(150, 110)
        ],
        [0, 1, 2, 3],
        "the quadrants top-left, top-right, bottom-left, bottom-right"
    );
}

/// `--labels` in a window, as on the headless output: under the window its client's title,
/// glyph for glyph where the headless backend writes it (two pixels in, four below), and the
/// caption at the bottom of the output, composed over the frame by GL.
#[test]
fn a_window_labels_its_clients_as_the_headless_output_does() {
    let (run, image) = window_with_fbclient("window-labels", &["--labels", "labelled window"]);
    assert_eq!(run.client("fbclient")["frames_shown"], 60, "{}", run.stdout);
    // nested's label colour; the window's own pixels are still the client's.
    const TEXT: u32 = 0xe0_e0e0;
    let title = "fbclient shm";
    let (left, top) = (2, 120 + 4);
    let mut wrong = Vec::new();
    for (i, c) in title.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[c as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..8 {
                let (x, y) = (left + 8 * i as u32 + column, top + row as u32);
                let lit = image.pixel(x, y) == TEXT;
                if lit != (bits >> column & 1 == 1) {
                    wrong.push((x, y));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "the title's glyphs differ at {wrong:?}");
    // The caption: the output is 640×480, its last line of text 12 pixels from the bottom.
    let caption = (468..476)
        .flat_map(|y| (0..640).map(move |x| (x, y)))
        .filter(|&(x, y)| image.pixel(x, y) == TEXT)
        .count();
    assert!(caption > 100, "{caption} caption pixels");
    let window = (0..120)
        .flat_map(|y| (0..160).map(move |x| (x, y)))
        .filter(|&(x, y)| image.pixel(x, y) >> 16 & 0xff == RED)
        .count();
    assert_eq!(window, 160 * 120, "the window's own pixels");
}

/// An X window dump (`xwd`, ZPixmap, 24 or 32 bits per pixel) as 0xRRGGBB pixels.
struct Xwd {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
}

impl Xwd {
    fn read(path: &Path) -> Xwd {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let field = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        let (header_size, format, width, height) = (field(0), field(2), field(4), field(5));
        let (byte_order, bits_per_pixel, bytes_per_line) = (field(7), field(11), field(12));
        let masks = [field(14), field(15), field(16)];
        let colours = field(19);
        assert_eq!(format, 2, "a ZPixmap dump");
        assert!(
            matches!(bits_per_pixel, 24 | 32),
            "{bits_per_pixel} bits per pixel"
        );
        let start = header_size as usize + colours as usize * 12;
        let step = bits_per_pixel as usize / 8;
        let mut pixels = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height as usize {
            let row = &bytes[start + y * bytes_per_line as usize..];
            for x in 0..width as usize {
                let mut raw = [0u8; 4];
                raw[..step].copy_from_slice(&row[x * step..x * step + step]);
                let value = if byte_order == 0 {
                    u32::from_le_bytes(raw)
                } else {
                    u32::from_be_bytes(raw) >> (32 - bits_per_pixel)
                };
                let channel = |mask: u32| (value & mask) >> mask.trailing_zeros() & 0xff;
                pixels.push(channel(masks[0]) << 16 | channel(masks[1]) << 8 | channel(masks[2]));
            }
        }
        Xwd {
            width,
            height,
            pixels,
        }
    }

    fn pixel(&self, x: u32, y: u32) -> u32 {
        self.pixels[(y * self.width + x) as usize]
    }
}
