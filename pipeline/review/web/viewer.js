// deepdream view: the dream (and its source) on an inside-out sphere, or flat, with one shared camera.
// Direction convention (the test's, and py360convert e2p's): yaw 0 looks at the centre column of the
// equirect frame, positive yaw looks right (towards larger u), positive pitch looks up.
import * as THREE from '/three.module.min.js';

// Query: ?yaw=&pitch=&fov= start looking that way; ?mode=split|wipe; ?t=SECONDS shows that moment paused (a shareable
// view, and a screenshot that compares the same frame of both); ?test=1 is the browser test's probe.
const query = new URLSearchParams(location.search);
const TEST = query.get('test') === '1';
const num = (key, fallback) => (Number.isFinite(Number(query.get(key))) && query.get(key) !== null
  ? Number(query.get(key)) : fallback);
const $ = (id) => document.getElementById(id);
const info = await (await fetch('/info.json')).json();

const renderer = new THREE.WebGLRenderer({ antialias: !TEST, preserveDrawingBuffer: TEST });
renderer.setPixelRatio(TEST ? 1 : window.devicePixelRatio);
renderer.setScissorTest(true);
renderer.xr.enabled = true;
renderer.xr.setReferenceSpaceType('local');
$('stage').appendChild(renderer.domElement);
const canvas = renderer.domElement;

const cam = { yaw: num('yaw', 0), pitch: num('pitch', 0), fov: Math.min(120, Math.max(30, num('fov', 90))) };
clampCam();

// Which part of the frame is one eye: the top (left eye) of top-bottom, the left of left-right.
// Texture v = 1 is the frame's top row (flipY), so the top half is offset 0.5.
const EYE = { mono: [1, 1, 0, 0], 'top-bottom': [1, 0.5, 0, 0.5], 'left-right': [0.5, 1, 0, 0] };

function makeView(meta) {
  const video = document.createElement('video');
  Object.assign(video, { src: meta.url, muted: true, loop: true, playsInline: true, preload: 'auto',
                         crossOrigin: 'anonymous' });
  const tex = new THREE.VideoTexture(video);
  tex.colorSpace = THREE.SRGBColorSpace;
  tex.generateMipmaps = false;
  tex.minFilter = THREE.LinearFilter;
  const [rx, ry, ox, oy] = EYE[meta.stereo] || EYE.mono;
  tex.repeat.set(rx, ry);
  tex.offset.set(ox, oy);
  // A paused or just-seeked video gives no frame callback in every browser: upload its frame anyway.
  for (const ev of ['loadeddata', 'seeked']) video.addEventListener(ev, () => { tex.needsUpdate = true; });
  const scene = new THREE.Scene();
  const material = new THREE.MeshBasicMaterial({ map: tex });
  const eyeAspect = (meta.width * rx) / (meta.height * ry);
  const sphere = meta.projection === 'equirect';
  const geometry = sphere ? new THREE.SphereGeometry(50, 128, 64) : new THREE.PlaneGeometry(1, 1);
  if (sphere) geometry.scale(-1, 1, 1); // seen from inside, not mirrored
  const mesh = new THREE.Mesh(geometry, material);
  scene.add(mesh);
  const camera = sphere ? new THREE.PerspectiveCamera(cam.fov, 1, 0.1, 100)
                        : new THREE.OrthographicCamera(-0.5, 0.5, 0.5, -0.5, -1, 1);
  return { meta, video, tex, scene, mesh, camera, sphere, eyeAspect };
}

const views = [makeView(info.video)];
if (info.source) views.push(makeView(info.source));
const dream = views[0];
const source = views[1] || null;
// 360 with a source: side by side; flat: a before/after wipe (source left of the divider).
let mode = !source ? 'single' : ['split', 'wipe'].includes(query.get('mode')) ? query.get('mode')
  : dream.sphere ? 'split' : 'wipe';
let wipe = 0.5;

function aim(view, width, height) {
  const aspect = width / height;
  if (view.sphere) {
    const c = view.camera;
    c.fov = cam.fov;
    c.aspect = aspect;
    c.updateProjectionMatrix();
    const y = THREE.MathUtils.degToRad(cam.yaw);
    const p = THREE.MathUtils.degToRad(cam.pitch);
    c.lookAt(-Math.cos(y) * Math.cos(p), Math.sin(p), -Math.sin(y) * Math.cos(p));
  } else {
    const c = view.camera;
    c.left = -aspect / 2; c.right = aspect / 2; c.top = 0.5; c.bottom = -0.5;
    c.updateProjectionMatrix();
    const fit = Math.min(aspect / view.eyeAspect, 1); // letterbox the frame into the viewport
    view.mesh.scale.set(view.eyeAspect * fit, fit, 1);
  }
}

// Viewports in CSS pixels from the left, full height: [view, x, width, scissorX, scissorWidth].
function layout(W) {
  if (mode === 'single') return [[dream, 0, W, 0, W]];
  if (mode === 'split') {
    const h = Math.floor(W / 2);
    return [[dream, 0, h, 0, h], [source, h, W - h, h, W - h]];
  }
  const x = Math.round(wipe * W);
  return [[dream, 0, W, 0, W], [source, 0, W, 0, x]];
}

function resize() {
  renderer.setSize(window.innerWidth, window.innerHeight, false);
}

function syncSource() {
  if (!source || source.video.seeking || dream.video.seeking) return;
  const d = source.video.duration; // a shorter source loops on its own clock
  const t = Number.isFinite(d) && d > 0 ? dream.video.currentTime % d : dream.video.currentTime;
  if (Math.abs(source.video.currentTime - t) > 0.15) source.video.currentTime = t;
}

function draw() {
  if (renderer.xr.isPresenting) { // the headset's own cameras look around the dream
    renderer.setScissorTest(false);
    renderer.render(dream.scene, dream.camera);
    renderer.setScissorTest(true);
    return;
  }
  if (!TEST) syncSource();
  const W = canvas.clientWidth, H = canvas.clientHeight;
  renderer.setScissorTest(true);
  for (const [view, x, w, sx, sw] of layout(W)) {
    aim(view, w, H);
    renderer.setViewport(x, 0, w, H);
    renderer.setScissor(sx, 0, sw, H);
    renderer.render(view.scene, view.camera);
  }
  placeOverlays(W);
}

function placeOverlays(W) {
  const a = $('label-a'), b = $('label-b'), d = $('divider');
  a.textContent = `dream: ${info.video.name}`;
  b.hidden = !source;
  d.hidden = mode !== 'wipe';
  $('wipe').hidden = mode !== 'wipe';
  $('mode').hidden = !source;
  $('mode').textContent = mode === 'split' ? 'Wipe' : 'Side by side';
  if (!source) { a.style.left = '8px'; return; }
  b.textContent = `source: ${info.source.name}`;
  if (mode === 'split') {
    a.style.left = '8px'; b.style.left = `${Math.floor(W / 2) + 8}px`;
  } else {
    const x = Math.round(wipe * W);
    d.style.left = `${x}px`;
    b.style.left = '8px'; a.style.left = `${x + 8}px`;
  }
}

// Look around: drag (pointer), arrow keys, wheel zoom. On flat video a drag moves the wipe instead.
let drag = null;
canvas.addEventListener('pointerdown', (e) => {
  drag = { x: e.clientX, y: e.clientY };
  try { canvas.setPointerCapture(e.pointerId); } catch { /* synthetic pointer */ }
  canvas.style.cursor = 'grabbing';
});
canvas.addEventListener('pointermove', (e) => {
  if (!drag) return;
  if (!dream.sphere && mode === 'wipe') {
    wipe = Math.min(1, Math.max(0, e.clientX / canvas.clientWidth));
    $('wipe').value = wipe;
  } else {
    const degPerPx = cam.fov / canvas.clientHeight; // the content follows the pointer
    cam.yaw -= (e.clientX - drag.x) * degPerPx;
    cam.pitch += (e.clientY - drag.y) * degPerPx;
    clampCam();
  }
  drag = { x: e.clientX, y: e.clientY };
});
const endDrag = () => { drag = null; canvas.style.cursor = 'grab'; };
canvas.addEventListener('pointerup', endDrag);
canvas.addEventListener('pointercancel', endDrag);
canvas.addEventListener('wheel', (e) => {
  e.preventDefault();
  cam.fov = Math.min(120, Math.max(30, cam.fov + e.deltaY * 0.05));
}, { passive: false });
window.addEventListener('keydown', (e) => {
  const step = e.shiftKey ? 15 : 5;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
  if (moves[e.key]) {
    cam.yaw += moves[e.key][0];
    cam.pitch += moves[e.key][1];
    clampCam();
    e.preventDefault();
  } else if (e.key === ' ') {
    togglePlay();
    e.preventDefault();
  }
});
function clampCam() {
  cam.pitch = Math.min(89, Math.max(-89, cam.pitch));
  cam.yaw = ((cam.yaw + 180) % 360 + 360) % 360 - 180;
}

function togglePlay() {
  const play = dream.video.paused;
  for (const v of views) play ? v.video.play().catch(() => {}) : v.video.pause();
  $('play').textContent = play ? 'Pause' : 'Play';
}
$('play').addEventListener('click', togglePlay);
$('mode').addEventListener('click', () => { mode = mode === 'split' ? 'wipe' : 'split'; });
$('wipe').addEventListener('input', (e) => { wipe = Number(e.target.value); });

async function offerVR() {
  if (!dream.sphere || !navigator.xr || !(await navigator.xr.isSessionSupported('immersive-vr'))) return;
  const button = $('vr');
  button.hidden = false;
  let session = null;
  button.addEventListener('click', async () => {
    if (session) { await session.end(); return; }
    session = await navigator.xr.requestSession('immersive-vr', { optionalFeatures: ['local-floor'] });
    session.addEventListener('end', () => { session = null; button.textContent = 'Enter VR'; });
    await renderer.xr.setSession(session);
    button.textContent = 'Exit VR';
  });
}

window.addEventListener('resize', resize);
resize();

// ?test=1: the browser test's probe. Shows the first frames paused, reads the canvas back at the
// start direction and after a synthetic drag and key press, and posts it all to /report.
async function selfTest() {
  const ready = (v) => new Promise((resolve, reject) => {
    if (v.readyState >= 2) { resolve(); return; }
    v.addEventListener('loadeddata', () => resolve(), { once: true });
    v.addEventListener('error', () => reject(new Error(`video ${v.src}: error ${v.error && v.error.code}`)),
                       { once: true });
  });
  for (const v of views) { v.video.pause(); await ready(v.video); v.tex.needsUpdate = true; }
  const gl = renderer.getContext();
  const shot = () => {
    draw();
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let bin = '';
    for (let i = 0; i < px.length; i += 0x8000) bin += String.fromCharCode(...px.subarray(i, i + 0x8000));
    return { yaw: cam.yaw, pitch: cam.pitch, fov: cam.fov, width: w, height: h, rgba: btoa(bin) };
  };
  const shots = [shot()];
  const W = canvas.clientWidth, H = canvas.clientHeight;
  const at = (type, x, y) => canvas.dispatchEvent(new PointerEvent(type, {
    clientX: x, clientY: y, pointerId: 1, pointerType: 'mouse', isPrimary: true, bubbles: true, buttons: 1 }));
  at('pointerdown', W / 4, H / 2);
  at('pointermove', W / 4 + 30, H / 2 + 10);
  at('pointermove', W / 4 + 60, H / 2 + 20);
  at('pointerup', W / 4 + 60, H / 2 + 20);
  shots.push(shot());
  window.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowRight', bubbles: true }));
  shots.push(shot());
  const traversal = [];
  for (const p of ['/%2e%2e/%2e%2e/etc/passwd', '/video/..%2f..%2fetc%2fpasswd', '/..%5c..%5cetc%5cpasswd']) {
    traversal.push([p, (await fetch(p)).status]);
  }
  return { mode, wipe, views: layout(W).map(([v, x, w]) => ({ url: v.meta.url, x, width: w })), shots, traversal,
           css: [W, H], dpr: window.devicePixelRatio, gl: gl.getParameter(gl.VERSION) };
}

async function report(body) {
  await fetch('/report', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                           body: JSON.stringify(body) });
}

if (TEST) {
  window.addEventListener('error', (e) => report({ error: String(e.message) }));
  selfTest().then(report, (e) => report({ error: String(e && e.stack || e) }));
} else {
  if (query.get('t') !== null) {
    for (const v of views) v.video.currentTime = Math.max(0, num('t', 0));
    $('play').textContent = 'Play';
  } else {
    for (const v of views) v.video.play().catch(() => { $('play').textContent = 'Play'; });
  }
  renderer.setAnimationLoop(draw);
  offerVR().catch(() => {});
}
