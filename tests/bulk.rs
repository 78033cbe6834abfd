//! Bulk detection end to end, with real engines and no AWS: moto's Step Functions interpreter
//! runs statemachine/bulk.asl.json (Distributed Map, S3 ItemReader and ResultWriter); its Lambda
//! calls go to `localhost:$MOTO_PORT`, where a shim in this test forwards them to AWS's Runtime
//! Interface Emulator running `bootstrap` with `_HANDLER=bulk` (and everything else to moto).
//!
//! moto's ASL parser rejects `ItemBatcher`, so the end-to-end run loads the definition without it
//! (one key per invocation, the single-item event); the batch shape (`Items` + `BatchInput`) goes
//! through the same emulator directly, in `a_batch_event_and_single_items_give_the_same_results`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::aws::{self, Emulator, Moto};

const BUCKET: &str = "objdet-bulk";
const STATE_MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:objdet-bulk";

struct Stack {
    moto: Moto,
    lambda: Emulator,
    s3: aws_sdk_s3::Client,
    sfn: aws_sdk_sfn::Client,
}

fn envs(moto: &Moto) -> Vec<(String, String)> {
    let mut e = moto.env();
    e.retain(|(k, _)| k != "UPLOAD_BUCKET");
    e.extend(
        [("UPLOAD_BUCKET", BUCKET), ("S3_READ_PREFIX", "images/"), ("S3_FORCE_PATH_STYLE", "true")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    e
}

/// moto with its state-machine interpreter on, the shim, the bulk function under the emulator,
/// and the state machine as the template deploys it (placeholders filled, ItemBatcher removed).
async fn stack() -> Stack {
    let shim_port = aws::free_port();
    let moto = Moto::start_with(&[("MOTO_PORT".to_string(), shim_port.to_string())]);
    let moto_port: u16 = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let lambda = Emulator::start("bulk", &envs(&moto));
    // The shim must listen on the port moto was told; bind it now.
    let listener_port = shim_on(shim_port, moto_port, lambda.invoke_url.clone()).await;
    assert_eq!(listener_port, shim_port);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/moto-api/config", moto.endpoint))
        .json(&json!({"stepfunctions": {"execute_state_machine": true}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "moto config: {}", res.status());
    let s3 = moto.client();
    aws::create_bucket(&s3, BUCKET).await;
    let sfn = sfn_client(&moto.endpoint);
    let definition = definition();
    let role = "arn:aws:iam::123456789012:role/objdet-bulk";
    sfn.create_state_machine().name("objdet-bulk").definition(definition).role_arn(role).send().await.unwrap();
    Stack { moto, lambda, s3, sfn }
}

/// On `port` (moto's `MOTO_PORT`): forwards Lambda invocations
/// (`/2015-03-31/functions/<name>/invocations`) to the emulator and every other request to moto.
async fn shim_on(port: u16, moto: u16, emulator: String) -> u16 {
    use axum::body::Body;
    use axum::extract::Request;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let http = reqwest::Client::new();
    // The emulator runs one invocation at a time (as one Lambda execution environment does):
    // Distributed Map's concurrent children queue here.
    let one_at_a_time = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, emulator, lock) = (http.clone(), emulator.clone(), one_at_a_time.clone());
        async move {
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let to_lambda = path.starts_with("/2015-03-31/functions/") && path.contains("/invocations");
            let target = if to_lambda { emulator } else { format!("http://127.0.0.1:{moto}{path}") };
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut out = http.request(parts.method, &target).body(body).timeout(Duration::from_secs(120));
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" && k != "transfer-encoding" {
                    out = out.header(k, v);
                }
            }
            let _turn = if to_lambda { Some(lock.lock().await) } else { None };
            let res = out.send().await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let bytes = res.bytes().await.unwrap();
            let mut response = axum::response::Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" {
                    response.headers_mut().insert(k, v.clone());
                }
            }
            response
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn sfn_client(endpoint: &str) -> aws_sdk_sfn::Client {
    let conf = aws_sdk_sfn::config::Builder::new()
        .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
        .region(aws_sdk_sfn::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sfn::config::Credentials::new("testing", "testing", None, None, "static"))
        .build();
    aws_sdk_sfn::Client::from_conf(conf)
}

/// statemachine/bulk.asl.json with the template's substitutions, without ItemBatcher (moto).
fn definition() -> String {
    let text = std::fs::read_to_string(common::root().join("statemachine/bulk.asl.json")).unwrap();
    let text = text
        .replace("${BulkFunctionArn}", "arn:aws:lambda:us-east-1:123456789012:function:objdet-bulk")
        .replace("${ResultsBucket}", BUCKET)
        .replace("${RunsPrefix}", "runs/")
        .replace("${MaxConcurrency}", "4")
        .replace("${MaxItemsPerBatch}", "10")
        .replace("${ToleratedFailurePercentage}", "5");
    let mut asl: Value = serde_json::from_str(&text).unwrap();
    let map = asl["States"]["DetectPrefix"].as_object_mut().unwrap();
    assert!(map.remove("ItemBatcher").is_some(), "the definition batches keys");
    asl.to_string()
}

/// The objects of the prefix: fixture photos in nested folders, keys with a space and non-ASCII
/// characters, one text file and one empty object. Returns key → fixture name ("" for non-images).
async fn upload(s3: &aws_sdk_s3::Client) -> BTreeMap<String, String> {
    let photos = ["dog.jpg", "person.jpg", "giraffe.jpg", "coffee.png", "eagle.jpg", "rocket.jpg"];
    let mut keys = BTreeMap::new();
    for i in 0..60 {
        let photo = photos[i % photos.len()];
        let key = match i % 4 {
            0 => format!("images/{i:02}-{photo}"),
            1 => format!("images/folder {}/{i:02} {photo}", i % 3),
            2 => format!("images/a/b/c/{i:02}-é-{photo}"),
            _ => format!("images/ünïcode/日本/{i:02}-{photo}"),
        };
        aws::put(s3, BUCKET, &key, common::fixture(photo)).await;
        keys.insert(key, photo.to_string());
    }
    aws::put(s3, BUCKET, "images/notes/readme.txt", b"not an image at all".to_vec()).await;
    aws::put(s3, BUCKET, "images/empty.jpg", vec![]).await;
    keys.insert("images/notes/readme.txt".into(), String::new());
    keys.insert("images/empty.jpg".into(), String::new());
    keys
}

/// Runs the state machine over images/ to its end (SUCCEEDED); returns its ARN and output.
async fn run(stack: &Stack) -> (String, Value) {
    let input = json!({"bucket": BUCKET, "prefix": "images/"}).to_string();
    let name = format!("run-{}", uuid::Uuid::new_v4());
    let ex = stack.sfn.start_execution().state_machine_arn(STATE_MACHINE).name(name).input(input).send().await.unwrap();
    let arn = ex.execution_arn().to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = stack.sfn.describe_execution().execution_arn(&arn).send().await.unwrap();
        let status = d.status().as_str().to_string();
        if status != "RUNNING" {
            assert_eq!(status, "SUCCEEDED", "{:?} {:?}\nbulk log: {}", d.error(), d.cause(), tail(&stack.lambda));
            let output: Value = serde_json::from_str(d.output().unwrap_or("{}")).unwrap();
            return (arn, output);
        }
        assert!(Instant::now() < deadline, "the run did not end in 10 minutes");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn tail(e: &Emulator) -> String {
    let log = std::fs::read_to_string(e.log_path()).unwrap_or_default();
    log.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect()
}

/// The ETag of every result object: a result rewritten gets a new one (its timing differs).
async fn result_etags(s3: &aws_sdk_s3::Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page =
            s3.list_objects_v2().bucket(BUCKET).prefix("results/").set_continuation_token(token).send().await.unwrap();
        for o in page.contents() {
            out.insert(o.key().unwrap().to_string(), o.e_tag().unwrap_or("").to_string());
        }
        token = page.next_continuation_token().map(String::from);
        if token.is_none() {
            return out;
        }
    }
}

fn result_key(key: &str) -> String {
    objdet::results::result_key("results/", key)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_is_detected_resumably_on_the_distributed_map() {
    let stack = stack().await;
    let keys = upload(&stack.s3).await;
    // What each fixture holds, by the same model run here.
    let detector = common::detector();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for photo in keys.values().filter(|p| !p.is_empty()) {
        let out = detector.start_within(objdet::detector::Input::Image(common::fixture(photo).into()), None).await;
        expected.insert(photo.clone(), out.result.unwrap().objects.into_iter().map(|o| o.label).collect());
    }

    // First run: everything is detected.
    let (_, output) = run(&stack).await;
    let manifest = output.pointer("/map_run/ResultWriterDetails/Key").and_then(|k| k.as_str()).expect("a manifest");
    assert!(aws::get(&stack.s3, BUCKET, manifest).await.is_some(), "the manifest {manifest} is written");
    for (key, photo) in &keys {
        let doc = aws::get(&stack.s3, BUCKET, &result_key(key)).await.unwrap_or_else(|| panic!("no result for {key}"));
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["key"], json!(key));
        assert!(doc["source_etag"].as_str().is_some_and(|e| !e.is_empty()), "{doc}");
        if photo.is_empty() {
            assert_eq!(doc["result"]["error"]["code"], "not_an_image", "{key}: {doc}");
        } else {
            let labels: Vec<String> = doc["result"]["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["label"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(&labels, &expected[photo], "{key}");
        }
    }
    let first = result_etags(&stack.s3).await;
    assert_eq!(first.len(), 62);

    // Second run: nothing changed, nothing is redone (every result keeps its ETag: not rewritten).
    run(&stack).await;
    assert_eq!(result_etags(&stack.s3).await, first, "a result was rewritten");

    // Five results deleted: exactly those five are redone.
    let gone: Vec<String> = keys.keys().step_by(11).take(5).map(|k| result_key(k)).collect();
    for key in &gone {
        stack.s3.delete_object().bucket(BUCKET).key(key).send().await.unwrap();
    }
    run(&stack).await;
    let third = result_etags(&stack.s3).await;
    let changed: Vec<&String> = third.keys().filter(|k| first.get(*k) != third.get(*k)).collect();
    assert_eq!(changed, gone.iter().collect::<Vec<_>>(), "exactly the deleted results are written again");
    let _ = &stack.moto;
}

/// The batch event Distributed Map sends with ItemBatcher, and single items, through the real
/// bootstrap under the emulator: the same results.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_event_and_single_items_give_the_same_results() {
    let moto = Moto::start();
    let s3 = moto.client();
    aws::create_bucket(&s3, BUCKET).await;
    let lambda = Emulator::start("bulk", &envs(&moto));
    let keys = ["images/x/dog.jpg", "images/x/person one.jpg", "images/x/notes.txt"];
    aws::put(&s3, BUCKET, keys[0], common::fixture("dog.jpg")).await;
    aws::put(&s3, BUCKET, keys[1], common::fixture("person.jpg")).await;
    aws::put(&s3, BUCKET, keys[2], b"text".to_vec()).await;
    let listed = s3.list_objects_v2().bucket(BUCKET).prefix("images/x/").send().await.unwrap();
    let items: Vec<Value> = listed
        .contents()
        .iter()
        .map(|o| json!({"Key": o.key(), "Size": o.size(), "ETag": o.e_tag(), "StorageClass": "STANDARD"}))
        .collect();
    assert_eq!(items.len(), 3);

    let summary = lambda.invoke(&json!({"Items": items, "BatchInput": {"bucket": BUCKET}})).await;
    assert_eq!(summary["processed"], 3, "{summary}\n{}", tail(&lambda));
    assert_eq!(summary["failed"]["not_an_image"], 1, "{summary}");
    let mut batch_docs = vec![];
    for key in items.iter().map(|i| i["Key"].as_str().unwrap()) {
        let doc: Value = serde_json::from_slice(&aws::get(&s3, BUCKET, &result_key(key)).await.unwrap()).unwrap();
        batch_docs.push(doc["result"]["objects"].clone());
        s3.delete_object().bucket(BUCKET).key(result_key(key)).send().await.unwrap();
    }
    for (item, objects) in items.iter().zip(&batch_docs) {
        let summary = lambda.invoke(item).await;
        assert_eq!(summary["processed"], 1, "{summary}");
        let key = item["Key"].as_str().unwrap();
        let doc: Value = serde_json::from_slice(&aws::get(&s3, BUCKET, &result_key(key)).await.unwrap()).unwrap();
        assert_eq!(&doc["result"]["objects"], objects, "{key}");
    }
    // Unchanged: skipped; a key outside S3_READ_PREFIX is not read.
    let again = lambda.invoke(&json!({"Items": items, "BatchInput": {"bucket": BUCKET}})).await;
    assert_eq!((again["processed"].as_u64(), again["skipped"].as_u64()), (Some(0), Some(3)), "{again}");
    let outside = lambda.invoke(&json!({"Key": "private/secret.jpg", "ETag": "\"e\""})).await;
    assert_eq!(outside["ignored"], 1, "{outside}");
}

/// `objdet bulk start --wait` against moto: progress while the run goes, then its summary;
/// clear errors for a state machine that does not exist and a prefix without objects.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_starts_a_run_and_follows_it_to_its_end() {
    let stack = stack().await;
    for (key, photo) in
        [("images/cli/a.jpg", "dog.jpg"), ("images/cli/b c.jpg", "person.jpg"), ("images/cli/d.png", "coffee.png")]
    {
        aws::put(&stack.s3, BUCKET, key, common::fixture(photo)).await;
    }
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_objdet"));
        common::hermetic(&mut c);
        c.current_dir(common::root()).args(["bulk"]).args(args);
        for (k, v) in stack.moto.env() {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL", &stack.moto.endpoint)
            .env("S3_FORCE_PATH_STYLE", "true")
            .env("OBJDET_BULK_POLL_MS", "200")
            .env("RUST_LOG", "warn");
        c.output().unwrap()
    };
    let out = cli(&[
        "start",
        "--state-machine",
        STATE_MACHINE,
        "--bucket",
        BUCKET,
        "--prefix",
        "images/cli/",
        "--wait",
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("objdet: started arn:aws:states:"), "{stderr}");
    assert!(stderr.contains("items done"), "no progress shown: {stderr}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "SUCCEEDED", "{status}");
    assert_eq!(status["items"]["total"], 3, "{status}");
    assert_eq!(status["items"]["succeeded"], 3, "{status}");
    assert!(status["manifest"].as_str().is_some_and(|m| m.starts_with("s3://objdet-bulk/runs/")), "{status}");
    assert!(stderr.contains("3 items, 3 succeeded, 0 failed"), "{stderr}");
    for key in ["images/cli/a.jpg", "images/cli/b c.jpg", "images/cli/d.png"] {
        assert!(aws::get(&stack.s3, BUCKET, &result_key(key)).await.is_some(), "{key}");
    }
    // `bulk status` of the same execution.
    let execution = status["execution"].as_str().unwrap();
    let again = cli(&["status", execution]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["status"], "SUCCEEDED");

    let missing = cli(&[
        "start",
        "--state-machine",
        "arn:aws:states:us-east-1:123456789012:stateMachine:nope",
        "--bucket",
        BUCKET,
        "--prefix",
        "images/",
    ]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && stderr.contains("no state machine"), "{stderr}");
    let empty =
        cli(&["start", "--state-machine", STATE_MACHINE, "--bucket", BUCKET, "--prefix", "images/nothing-here/"]);
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(
        !empty.status.success() && stderr.contains("no objects under s3://objdet-bulk/images/nothing-here/"),
        "{stderr}"
    );
}
