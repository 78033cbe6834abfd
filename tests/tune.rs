//! `objdet tune`, emulated: the Lambda bootstrap under AWS's Runtime Interface Emulator in Linux
//! cgroups (root, cgroup v1: this workplace's machines and CI), end to end.

mod common;

use std::process::Command;

/// One tuning run at a time: each checks that it leaves no cgroup behind, and its sizes' CPU
/// shares are measured without the other's load.
/// A fresh directory under target/test-logs (kept for reading when a test fails).
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = common::root().join("target/test-logs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    dir
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tune(dir: &std::path::Path, memory: &str, images: &std::path::Path) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_objdet"));
    common::hermetic(&mut c);
    c.current_dir(common::root())
        .env("RUST_LOG", "warn")
        .env("MODEL_PATH", common::root().join("models/centernet_mobilenetv3_coco.onnx"))
        .env("TMPDIR", dir)
        .args(["tune", "--memory", memory, "--batch", "2", "--warm", "2", "--timeout-secs", "300"])
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(dir.join("tune.csv"))
        .arg("--plot")
        .arg(dir.join("tune.svg"))
        .arg("--rie")
        .arg(common::aws::tool("aws-lambda-rie"))
        .arg("--bootstrap")
        .arg(env!("CARGO_BIN_EXE_bootstrap"));
    c.output().unwrap()
}

fn our_cgroups() -> Vec<String> {
    ["cpu", "cpuset", "memory"]
        .iter()
        .flat_map(|c| std::fs::read_dir(format!("/sys/fs/cgroup/{c}")).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("objdet-tune-"))
        .collect()
}

#[test]
fn two_sizes_two_images_end_to_end() {
    let dir = fresh_dir("tune-two-sizes");
    let images = dir.join("images");
    for name in ["dog.jpg", "coffee.png"] {
        std::fs::write(images.join(name), common::fixture(name)).unwrap();
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tune(&dir, "512,1769", &images);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.join(","), objdet::offload::tune::CSV_HEADER);
    let col = |row: &[&str], name: &str| row[header.iter().position(|h| *h == name).unwrap()].to_string();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let mut per_image = vec![];
    for (row, mb) in rows.iter().zip(["512", "1769"]) {
        assert_eq!(col(row, "memory_mb"), mb);
        assert_eq!(col(row, "batch"), "2");
        assert_eq!(col(row, "failure"), "", "{csv}");
        let number = |name: &str| col(row, name).parse::<f64>().unwrap_or_else(|_| panic!("{name} in {csv}"));
        assert!(number("init_ms") > 0.0 && number("cold_ms") > 0.0 && number("p95_ms") >= number("p50_ms"), "{csv}");
        assert!(number("cost_per_1000_usd") > 0.0 && number("peak_mb") > 10.0, "{csv}");
        per_image.push(number("ms_per_image"));
    }
    // 512 MB has 0.29 of a vCPU by its CFS quota, 1,769 MB a whole one: slower on any machine.
    assert!(per_image[0] > per_image[1], "{csv}");

    let rec = stdout.lines().find(|l| l.starts_with("recommendation (x86_64): ")).unwrap_or_else(|| panic!("{stdout}"));
    for choice in ["cheapest", "fastest", "balanced"] {
        let mb = rec.split(&format!("{choice} ")).nth(1).and_then(|s| s.split(' ').next()).unwrap();
        assert!(mb == "512" || mb == "1769", "{rec}");
    }
    assert!(rec.contains("fastest 1769 MB"), "{rec}");
    let svg = std::fs::read_to_string(dir.join("tune.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("512 MB") && svg.contains("1769 MB"), "{svg}");
    assert!(our_cgroups().is_empty(), "left behind: {:?}", our_cgroups());
}

/// A size too small for the batch is reported as out of memory in its row, not a hang, and the
/// other sizes still run.
#[test]
fn a_size_too_small_is_reported_out_of_memory() {
    let dir = fresh_dir("tune-oom");
    let images = dir.join("images");
    // 36 MP of one colour: a few kB of PNG, 108 MB of pixels once decoded.
    for i in 0..2u8 {
        let img = image::RgbImage::from_pixel(6000, 6000, image::Rgb([i * 40, 100, 200]));
        img.save(images.join(format!("flat-{i}.png"))).unwrap();
    }
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tune(&dir, "128,1024", &images);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows[0].starts_with("128,") && rows[0].contains("out of memory"), "{csv}");
    assert!(rows[1].starts_with("1024,") && rows[1].ends_with(','), "{csv}");
    assert!(stdout.contains("cheapest 1024 MB, fastest 1024 MB, balanced 1024 MB"), "{stdout}");
    assert!(our_cgroups().is_empty(), "left behind: {:?}", our_cgroups());
}
