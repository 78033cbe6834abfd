// The browser page in a real browser: Debian's chromium driven by playwright-core (never a
// downloaded browser) against `objdet serve` at $BASE. Screenshots go to $ARTIFACTS.
// Run by scripts/ui-test.sh (make ui-test).
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

// playwright-core lives in .cache/ui (scripts/ui-test.sh installs it there).
const { chromium } = createRequire(join(process.env.PLAYWRIGHT_PREFIX, "node_modules") + "/")("playwright-core");
const base = process.env.BASE;
const artifacts = process.env.ARTIFACTS;
const fixtures = join(process.env.ROOT, "tests/fixtures/images");
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run"],
  // (launch() gives the browser a fresh temporary profile of its own: Playwright refuses an
  // explicit --user-data-dir here.)
});

async function session(viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  return { context, page, requests, errors };
}

const labelsOf = (page, name) =>
  page.$$eval(`.result[data-name="${name}"] .objects li`, (lis) => lis.map((li) => li.textContent.replace(/ \(.*$/, "")));
const boxesOf = (page, name) => page.$$eval(`.result[data-name="${name}"] svg rect.box`, (r) => r.length);

// Desktop: two photos and a text file named .jpg, in one batch.
{
  const { context, page, requests, errors } = await session({ width: 1280, height: 1000 });
  const file = (name) => ({ name, mimeType: "image/jpeg", buffer: readFileSync(join(fixtures, name)) });
  await page.setInputFiles("#files", [
    file("dog.jpg"),
    file("person.jpg"),
    { name: "notes.jpg", mimeType: "image/jpeg", buffer: Buffer.from("this is text, not a photo") },
  ]);
  await page.waitForSelector('.result[data-name="person.jpg"] .objects li', { timeout: 60000 });
  const dog = await labelsOf(page, "dog.jpg");
  assert.ok(dog.includes("dog") && dog.includes("bicycle"), `dog.jpg: ${dog}`);
  const person = await labelsOf(page, "person.jpg");
  assert.ok(person.includes("person"), `person.jpg: ${person}`);
  const boxes = await boxesOf(page, "dog.jpg");
  assert.ok(boxes >= 2, `dog.jpg has ${boxes} boxes drawn`);
  const error = await page.textContent('.result[data-name="notes.jpg"] .error');
  assert.match(error, /not_an_image/, "the text file's error is shown on it");
  const timing = await page.textContent("#timing");
  assert.match(timing, /inference\s*[0-9]+\.[0-9] ms/, `timing panel: ${timing}`);
  assert.match(timing, /total in the server\s*[0-9]+\.[0-9] ms/, `timing panel: ${timing}`);
  assert.ok(await page.$$eval("#timing .bar span", (s) => s.length) >= 2, "a per-stage bar from Server-Timing");
  await page.screenshot({ path: join(artifacts, "desktop.png"), fullPage: true });

  // The slider filters boxes client-side.
  await page.focus("#threshold");
  await page.$eval("#threshold", (el) => { el.value = "0.6"; el.dispatchEvent(new Event("input")); });
  const fewer = await boxesOf(page, "dog.jpg");
  assert.ok(fewer < boxes, `threshold 0.6: ${fewer} boxes, not fewer than ${boxes}`);
  await page.screenshot({ path: join(artifacts, "desktop-threshold-0.6.png"), fullPage: true });

  const outside = requests.filter((u) => !u.startsWith(base) && !u.startsWith("blob:") && !u.startsWith("data:"));
  assert.deepEqual(outside, [], "the page requests nothing but the server under test");
  assert.deepEqual(errors, [], "no script errors");
  await context.close();
}

// Phone width, keyboard only: the file input is reachable, and a whole-request error is shown.
{
  const { context, page, errors } = await session({ width: 375, height: 800 });
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "files", "Tab reaches the file picker first");
  await page.setInputFiles("#files", [join(fixtures, "giraffe.jpg")]);
  await page.waitForSelector('.result[data-name="giraffe.jpg"] .objects li', { timeout: 60000 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 375, `no horizontal scrolling at 375 px (${width})`);
  await page.screenshot({ path: join(artifacts, "phone.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
}

// A server that wants a token: the page says so, and works once it is given.
if (process.env.BASE_WITH_TOKEN) {
  const tokenBase = process.env.BASE_WITH_TOKEN;
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${tokenBase}/`);
  await page.setInputFiles("#files", [join(fixtures, "dog.jpg")]);
  await page.waitForFunction(() => document.getElementById("problem").textContent.length > 0);
  assert.match(await page.textContent("#problem"), /needs an API token/);
  await page.fill("#token", process.env.TOKEN);
  await page.setInputFiles("#files", [join(fixtures, "person.jpg")]);
  await page.waitForSelector('.result[data-name="person.jpg"] .objects li', { timeout: 60000 });
  await page.screenshot({ path: join(artifacts, "token.png") });
  await context.close();
}

// A server running the custom-trained model, downloaded from S3 (MODEL_URI against moto): the page
// names the model, lists its classes in their box colours, and labels a generated photo with them.
if (process.env.BASE_CUSTOM) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${process.env.BASE_CUSTOM}/`);
  await page.waitForFunction(() => document.getElementById("model").textContent.length > 0);
  const model = await page.textContent("#model");
  assert.match(model, /shapes-yolo11n\.onnx \(anchors, 320×320, 4 classes\)/, `model line: ${model}`);
  const classes = await page.$$eval("#classes .class", (s) => s.map((e) => e.textContent));
  assert.deepEqual(classes, ["circle", "square", "triangle", "star"]);
  const swatches = await page.$$eval("#classes .class i", (s) => s.map((e) => getComputedStyle(e).backgroundColor));
  assert.equal(new Set(swatches).size, 4, `one colour per class: ${swatches}`);
  const shapes = join(process.env.ROOT, "tests/fixtures/shapes");
  await page.setInputFiles("#files", [join(shapes, "test-0002.jpg")]);
  await page.waitForSelector('.result[data-name="test-0002.jpg"] .objects li', { timeout: 60000 });
  const found = await labelsOf(page, "test-0002.jpg");
  const truth = JSON.parse(readFileSync(join(shapes, "truth.json")))["test-0002.jpg"].map((o) => o.label);
  assert.deepEqual([...found].sort(), [...truth].sort(), `found ${found}, the photo holds ${truth}`);
  const stroke = await page.$eval('.result[data-name="test-0002.jpg"] svg rect.box', (r) => r.getAttribute("stroke"));
  assert.ok(stroke.startsWith("hsl("), `boxes drawn in their class colour (${stroke})`);
  await page.screenshot({ path: join(artifacts, "custom-model.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
}

// Masks, keypoints and rotated boxes: each task's fixture model on one of its own photos; the
// page draws what the response carries (a filled outline per mask part, a dot per visible
// keypoint, a rotated box by its corners) in the class's colour.
const tasks = [
  ["segment", process.env.BASE_SEGMENT, "polygon.mask", (o) => o.mask.length],
  ["pose", process.env.BASE_POSE, "circle.keypoint", (o) => o.keypoints.filter((k) => k.score >= 0.5).length],
  ["obb", process.env.BASE_OBB, "polygon.box", () => 1],
];
for (const [task, taskBase, selector, expected] of tasks) {
  if (!taskBase) continue;
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const answers = [];
  page.on("response", async (r) => { if (r.url().endsWith("/api/detect")) answers.push(await r.json()); });
  await page.goto(`${taskBase}/`);
  await page.waitForFunction(() => document.getElementById("model").textContent.length > 0);
  const photo = join(process.env.ROOT, "tests/fixtures/tasks", task, "test-0001.jpg");
  await page.setInputFiles("#files", [photo]);
  await page.waitForSelector('.result[data-name="test-0001.jpg"] .objects li', { timeout: 60000 });
  const objects = answers[0].results[0].objects.filter((o) => o.score >= 0.25);
  assert.ok(objects.length > 0, `${task}: the model finds something on its own photo`);
  const want = objects.reduce((n, o) => n + expected(o), 0);
  const drawn = await page.$$eval(`.result[data-name="test-0001.jpg"] svg ${selector}`, (e) => e.length);
  assert.equal(drawn, want, `${task}: ${selector} drawn for each`);
  const fill = await page.$eval(`.result[data-name="test-0001.jpg"] svg ${selector}`, (e) => e.getAttribute(e.tagName === "polygon" && e.classList.contains("box") ? "stroke" : "fill"));
  assert.ok(fill.startsWith("hsl("), `${task}: drawn in the class colour (${fill})`);
  await page.screenshot({ path: join(artifacts, `task-${task}.png`), fullPage: true });
  assert.deepEqual(errors, []);
  await context.close();
}

await browser.close();
console.log(`ui test: ok (screenshots in ${artifacts}: ${["desktop.png", "desktop-threshold-0.6.png", "phone.png", "custom-model.png", "task-segment.png", "task-pose.png", "task-obb.png"].join(", ")})`);
