//! Real local stand-ins for AWS, started by the tests themselves:
//! moto's S3 server and AWS's Lambda Runtime Interface Emulator (both installed by `make setup-test`).
//!
//! Each runs under a small shell watchdog that stops it when the test process exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use super::root;

/// The bucket the events in `events/` name.
pub const BUCKET: &str = "objdet-uploads";

/// A tool installed by `scripts/setup.sh test`.
pub fn tool(name: &str) -> PathBuf {
    let p = root().join(".cache/test/bin").join(name);
    assert!(p.exists(), "{} is missing: run `make setup-test` (or `make test`)", p.display());
    p
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program args...` so that it dies with this test process; its output goes to
/// `target/test-logs/<log>` (read it when a test fails).
fn spawn_watched(program: &std::path::Path, args: &[String], envs: &[(String, String)], log: &str) -> Child {
    let dir = root().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::fs::File::create(dir.join(log)).unwrap();
    let mut script = String::from("\"$0\" \"$@\" & child=$!; ");
    script.push_str("trap 'kill $child 2>/dev/null' EXIT TERM; ");
    script.push_str(&format!(
        "while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done",
        std::process::id()
    ));
    let mut cmd = Command::new("sh");
    super::hermetic(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .arg(program)
        .args(args)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A moto S3 server on a free port.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _child: Child,
}

impl Moto {
    /// Starts moto_server and waits until it accepts connections.
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// [`Moto::start`] with `envs` for the server (e.g. `MOTO_PORT`, where its Step Functions
    /// interpreter sends Lambda invocations).
    pub fn start_with(envs: &[(String, String)]) -> Moto {
        let port = free_port();
        let child = spawn_watched(
            &tool("moto_server"),
            &["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()],
            envs,
            &format!("moto-{port}.log"),
        );
        wait_for_port(port, "moto_server");
        Moto { endpoint: format!("http://127.0.0.1:{port}"), _child: child }
    }

    /// An S3 client for this server (path-style, static test credentials).
    pub fn client(&self) -> Client {
        client_for(&self.endpoint)
    }

    /// Environment that points objdet's default AWS config chain at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_S3", self.endpoint.as_str()),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("UPLOAD_BUCKET", BUCKET),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A moto server that enforces IAM: requests by `user_env()`'s credentials get what `policy`
/// (an IAM policy document) grants, as AWS would answer them (403 `AccessDenied` otherwise).
pub struct MotoIam {
    /// The server (its own `client()` keeps the unrestricted test credentials while set-up lasts).
    pub moto: Moto,
    key_id: String,
    secret: String,
}

impl MotoIam {
    /// Starts moto, lets `setup` create buckets and objects unauthenticated, creates a user with
    /// `policy`, then turns enforcement on.
    pub async fn start<F: std::future::Future<Output = ()>>(policy: &str, setup: impl FnOnce(Client) -> F) -> MotoIam {
        // moto enforces IAM after this many requests; set-up stays below it, then filler requests
        // use it up.
        let port = free_port();
        let child = spawn_watched(
            &tool("moto_server"),
            &["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()],
            &[("INITIAL_NO_AUTH_ACTION_COUNT".into(), "60".into())],
            &format!("moto-iam-{port}.log"),
        );
        wait_for_port(port, "moto_server");
        let moto = Moto { endpoint: format!("http://127.0.0.1:{port}"), _child: child };
        setup(moto.client()).await;
        let iam = |params: &[(&str, &str)]| {
            let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
            form.extend_from_slice(params);
            let body = serde_urlencoded_form(&form);
            let url = moto.endpoint.clone();
            async move {
                reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    // moto routes by the service named in the credential scope.
                    .header(
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, \
                         SignedHeaders=host, Signature=0",
                    )
                    .body(body)
                    .send()
                    .await
                    .expect("IAM call")
                    .text()
                    .await
                    .unwrap()
            }
        };
        iam(&[("Action", "CreateUser"), ("UserName", "objdet")]).await;
        iam(&[("Action", "PutUserPolicy"), ("UserName", "objdet"), ("PolicyName", "p"), ("PolicyDocument", policy)])
            .await;
        let key = iam(&[("Action", "CreateAccessKey"), ("UserName", "objdet")]).await;
        let field = |name: &str| {
            let open = format!("<{name}>");
            let start = key.find(&open).map(|i| i + open.len()).expect("access key in the answer");
            key[start..start + key[start..].find('<').unwrap()].to_string()
        };
        let (key_id, secret) = (field("AccessKeyId"), field("SecretAccessKey"));
        // Use up the unauthenticated requests: the first refusal means enforcement is on.
        let admin = moto.client();
        for _ in 0..200 {
            if admin.list_buckets().send().await.is_err() {
                return MotoIam { moto, key_id, secret };
            }
        }
        panic!("moto never started enforcing IAM");
    }

    /// Environment for objdet as the restricted user.
    pub fn user_env(&self) -> Vec<(String, String)> {
        let mut env = self.moto.env();
        for (k, v) in env.iter_mut() {
            match k.as_str() {
                "AWS_ACCESS_KEY_ID" => *v = self.key_id.clone(),
                "AWS_SECRET_ACCESS_KEY" => *v = self.secret.clone(),
                _ => {}
            }
        }
        env
    }

    /// An S3 client with the restricted user's credentials.
    pub fn user_client(&self) -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.moto.endpoint)
            .credentials_provider(Credentials::new(&self.key_id, &self.secret, None, None, "static"))
            .force_path_style(true)
            .build();
        Client::from_conf(conf)
    }
}

fn serde_urlencoded_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc =
                |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Creates `bucket` (ignoring "already exists").
/// `s3s-fs` on a free port: an S3 server that verifies SigV4 signatures, presigned URLs included
/// (moto accepts a tampered one), with the credentials of [`client_for`].
pub struct S3sFs {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _child: Child,
}

impl S3sFs {
    /// Starts s3s-fs (`scripts/setup.sh test` builds it) over a fresh directory.
    pub fn start() -> S3sFs {
        let bin = root().join(".cache/tools/bin/s3s-fs");
        assert!(bin.exists(), "{} is missing: run `make setup-test` (or `make test`)", bin.display());
        let port = free_port();
        let dir = root().join("target/test-logs").join(format!("s3s-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let args =
            ["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "testing", "--secret-key", "testing"]
                .map(String::from)
                .into_iter()
                .chain([dir.display().to_string()])
                .collect::<Vec<_>>();
        let child = spawn_watched(&bin, &args, &[], &format!("s3s-{port}.log"));
        wait_for_port(port, "s3s-fs");
        S3sFs { endpoint: format!("http://127.0.0.1:{port}"), _child: child }
    }

    /// A client with the server's credentials.
    pub fn client(&self) -> Client {
        client_for(&self.endpoint)
    }
}

/// An S3 client for `endpoint` (path-style, static test credentials).
pub fn client_for(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

pub async fn create_bucket(client: &Client, bucket: &str) {
    let _ = client.create_bucket().bucket(bucket).send().await;
}

/// Uploads `body` to `bucket/key`.
pub async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    client.put_object().bucket(bucket).key(key).body(body.into()).send().await.expect("put_object");
}

/// Reads `bucket/key`, `None` when missing.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = client.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.ok()?.into_bytes().to_vec())
}

/// AWS's Lambda Runtime Interface Emulator running the `bootstrap` binary.
pub struct Emulator {
    /// The invoke URL.
    pub invoke_url: String,
    log: PathBuf,
    /// The environment the function was given (nothing else of this process reaches it).
    env: Vec<(String, String)>,
    _child: Child,
}

impl Emulator {
    /// Starts the emulator with `bootstrap` as the function running the entry point `handler`
    /// (`http`, `s3`: what `ImageConfig.Command` gives `_HANDLER`), on free ports, with `envs`.
    pub fn start(handler: &str, envs: &[(String, String)]) -> Emulator {
        let (p1, p2) = (free_port(), free_port());
        let mut all = vec![
            ("MODEL_PATH".to_string(), root().join("models/centernet_mobilenetv3_coco.onnx").display().to_string()),
            (
                "ORT_DYLIB_PATH".to_string(),
                std::env::var("ORT_DYLIB_PATH")
                    .unwrap_or_else(|_| root().join(".cache/ort/libonnxruntime.so").display().to_string()),
            ),
            ("RUST_LOG".to_string(), "warn".to_string()),
            ("_HANDLER".to_string(), handler.to_string()),
        ];
        all.extend_from_slice(envs);
        let child = spawn_watched(
            &tool("aws-lambda-rie"),
            &[
                "--runtime-interface-emulator-address".into(),
                format!("127.0.0.1:{p1}"),
                "--runtime-api-address".into(),
                format!("127.0.0.1:{p2}"),
                env!("CARGO_BIN_EXE_bootstrap").into(),
            ],
            &all,
            &format!("lambda-rie-{p1}.log"),
        );
        wait_for_port(p1, "aws-lambda-rie");
        Emulator {
            invoke_url: format!("http://127.0.0.1:{p1}/2015-03-31/functions/function/invocations"),
            log: root().join("target/test-logs").join(format!("lambda-rie-{p1}.log")),
            env: all,
            _child: child,
        }
    }

    /// Starts the emulator inside the Lambda image's file layout, as the Dockerfile's `lambda`
    /// stage builds it, under bubblewrap: `bootstrap` at `/var/runtime/bootstrap`, the model in
    /// `/opt/models`, ONNX Runtime in `/opt/onnxruntime/lib`, the stage's `ENV` and nothing else of
    /// this repository; the whole filesystem read-only but a tmpfs `/tmp`; `HOME` unset;
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` set, as Lambda does. (The host's `/usr` stands in for the
    /// base image's libraries.)
    pub fn start_in_image(handler: &str, envs: &[(String, String)]) -> Emulator {
        let (p1, p2) = (free_port(), free_port());
        let layout = image_layout(p1);
        let mut args: Vec<String> = sandbox_args(&layout);
        let mut all = dockerfile_env("lambda");
        all.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "3538".into()));
        all.push(("_HANDLER".into(), handler.into()));
        all.push(("RUST_LOG".into(), "warn".into()));
        // Nothing else: the sandbox starts from an empty environment (--clearenv), so the image's
        // own ENV must carry what the binary needs (e.g. the stage-stripping of REST API paths).
        all.extend_from_slice(envs);
        for (k, v) in &all {
            args.extend(["--setenv".into(), k.clone(), v.clone()]);
        }
        // The emulator is bound into the sandbox (as the base image has its own): a checkout
        // under /tmp is hidden by the sandbox's empty /tmp.
        args.extend(["--ro-bind".into(), tool("aws-lambda-rie").display().to_string(), "/var/aws-lambda-rie".into()]);
        args.extend([
            "/var/aws-lambda-rie".into(),
            "--runtime-interface-emulator-address".into(),
            format!("127.0.0.1:{p1}"),
            "--runtime-api-address".into(),
            format!("127.0.0.1:{p2}"),
            "/var/runtime/bootstrap".into(),
        ]);
        let child = spawn_watched(std::path::Path::new("bwrap"), &args, &[], &format!("lambda-image-{p1}.log"));
        wait_for_port(p1, "aws-lambda-rie in bubblewrap");
        Emulator {
            invoke_url: format!("http://127.0.0.1:{p1}/2015-03-31/functions/function/invocations"),
            log: root().join("target/test-logs").join(format!("lambda-image-{p1}.log")),
            env: all,
            _child: child,
        }
    }

    /// The environment the function was given.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// What the emulator and the function logged.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Invokes the function with `event` and returns what it answered.
    pub async fn invoke(&self, event: &serde_json::Value) -> serde_json::Value {
        // The emulator runs one invocation at a time.
        static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = LOCK.lock().await;
        let res = reqwest::Client::new()
            .post(&self.invoke_url)
            .json(event)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("invoke the emulator");
        let text = res.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("emulator answered non-JSON ({e}): {text}"))
    }
}

/// An `events/` file as JSON.
pub fn event(name: &str) -> serde_json::Value {
    let p = root().join("events").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The REST (v1) detect event as API Gateway sends it behind a stage, a console test and custom
/// domains: (what it is, the event). Every one must reach `/api/detect`.
pub fn rest_stage_events() -> Vec<(&'static str, serde_json::Value)> {
    let base = event("apigw-rest-detect-inline.json");
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut e = base.clone();
        edit(&mut e);
        e
    };
    vec![
        (
            "stage Prod",
            with(&|e| {
                e["requestContext"]["stage"] = "Prod".into();
                e["requestContext"]["path"] = "/Prod/api/detect".into();
            }),
        ),
        (
            "the console's test-invoke-stage",
            with(&|e| {
                e["requestContext"]["stage"] = "test-invoke-stage".into();
                e["requestContext"]["path"] = "/api/detect".into();
            }),
        ),
        (
            "the stage in the path itself",
            with(&|e| {
                e["requestContext"]["stage"] = "Prod".into();
                e["path"] = "/Prod/api/detect".into();
            }),
        ),
        (
            "a custom domain's base path",
            with(&|e| {
                e["requestContext"]["stage"] = "Prod".into();
                e["requestContext"]["domainName"] = "detect.example.com".into();
                e["requestContext"]["path"] = "/objdet/api/detect".into();
                e["path"] = "/objdet/api/detect".into();
            }),
        ),
        (
            "a custom domain's base path to a proxy resource",
            with(&|e| {
                e["requestContext"]["stage"] = "v1".into();
                e["requestContext"]["domainName"] = "detect.example.com".into();
                e["requestContext"]["path"] = "/vision/api/detect".into();
                e["requestContext"]["resourcePath"] = "/{proxy+}".into();
                e["resource"] = "/{proxy+}".into();
                e["pathParameters"] = serde_json::json!({"proxy": "api/detect"});
                e["path"] = "/vision/api/detect".into();
            }),
        ),
    ]
}

/// The files of the Lambda image (the Dockerfile's `lambda` stage), laid out under a fresh
/// directory: `opt/models/`, `opt/onnxruntime/lib/`, `var/runtime/bootstrap`.
pub fn image_layout(id: u16) -> PathBuf {
    image_layout_with(id, &root().join("models/centernet_mobilenetv3_coco.onnx"))
}

/// [`image_layout`] of an image built with `--build-arg MODEL=models/<model's name>`: the model
/// stage copies it to `/opt/models/<name>.onnx` with `<name>.labels.txt` when one lies beside it.
pub fn image_layout_with(id: u16, model: &std::path::Path) -> PathBuf {
    let dir = root().join("target/test-logs").join(format!("lambda-image-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    let models = dir.join("opt/models");
    let ort = dir.join("opt/onnxruntime/lib");
    let runtime = dir.join("var/runtime");
    for d in [&models, &ort, &runtime] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(model, models.join(model.file_name().unwrap())).unwrap();
    let labels = model.with_extension("labels.txt");
    if labels.exists() {
        std::fs::copy(&labels, models.join(labels.file_name().unwrap())).unwrap();
    }
    let lib = std::fs::canonicalize(root().join(".cache/ort/libonnxruntime.so")).unwrap();
    std::fs::copy(&lib, ort.join("libonnxruntime.so")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_bootstrap"), runtime.join("bootstrap")).unwrap();
    dir
}

/// bubblewrap's arguments for a read-only system with `layout` as the image's `/opt` and
/// `/var/runtime`, a tmpfs `/tmp`, and an empty environment (no `HOME`; the caller adds the
/// image's `ENV` with `--setenv`).
pub fn sandbox_args(layout: &std::path::Path) -> Vec<String> {
    let path = |p: &str| layout.join(p).display().to_string();
    [
        "--clearenv",
        "--ro-bind",
        "/",
        "/",
        "--tmpfs",
        "/var",
        "--ro-bind",
        &path("var/runtime"),
        "/var/runtime",
        "--ro-bind",
        &path("opt"),
        "/opt",
        "--tmpfs",
        "/tmp",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--unsetenv",
        "HOME",
        "--chdir",
        "/",
        "--die-with-parent",
    ]
    .map(String::from)
    .to_vec()
}

/// The `ENV` of a Dockerfile stage (`FROM ... AS <stage>` up to the next `FROM`), with the
/// stage's `ARG` defaults substituted.
pub fn dockerfile_env(stage: &str) -> Vec<(String, String)> {
    dockerfile_env_with(stage, &[])
}

/// [`dockerfile_env`] with build arguments (`--build-arg K=V`) given.
pub fn dockerfile_env_with(stage: &str, build_args: &[(&str, &str)]) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut in_stage = false;
    let mut env_text = String::new();
    let mut continued = false;
    let mut args: Vec<(String, String)> = vec![];
    for line in text.lines() {
        if line.starts_with("FROM ") {
            in_stage = line.trim_end().ends_with(&format!(" AS {stage}"));
            continue;
        }
        if !in_stage {
            continue;
        }
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ARG ") {
            let (k, default) = rest.split_once('=').unwrap_or((rest, ""));
            let v = build_args.iter().find(|(a, _)| *a == k).map_or(default, |(_, v)| v);
            args.push((k.to_string(), v.to_string()));
        } else if let Some(rest) = line.strip_prefix("ENV ") {
            env_text.push_str(rest.trim_end_matches('\\'));
            env_text.push(' ');
            continued = line.ends_with('\\');
        } else if continued {
            env_text.push_str(line.trim_end_matches('\\'));
            env_text.push(' ');
            continued = line.ends_with('\\');
        }
    }
    for (k, v) in &args {
        env_text = env_text.replace(&format!("${{{k}}}"), v);
    }
    let vars: Vec<(String, String)> = env_text
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "MODEL_PATH"), "no ENV found in the Dockerfile's {stage} stage");
    vars
}
