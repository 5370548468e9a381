// A real glTF viewer for the tests: three.js's GLTFLoader builds the materials (MeshStandardMaterial with
// the GLB's normal, occlusion-roughness-metallic and colour textures), lit by a directional and a hemisphere
// light, seen by a fixed camera (world +Y up, the object's front +Z; docs/conventions.md).
//
// index.html?model=URL[&azimuth=DEG][&elevation=DEG][&size=PX][&frame=cx,cy,cz,radius]
// loads the GLB and renders it once; the test reads `window.viewer`:
//   ready / error, messages (console warnings and errors), info (what three.js made of the file: world
//   bounding box, triangles, materials' maps, the scene's extras, the camera's frame), and
//   render({normalMap, flipGreen, albedo, occlusion}) -> PNG data URL of the canvas (RGBA, transparent background).
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const viewer = { ready: false, error: null, messages: [], info: null, render: null };
window.viewer = viewer;
for (const level of ["warn", "error"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    viewer.messages.push(`${level}: ${args.join(" ")}`);
    original(...args);
  };
}
window.addEventListener("error", (event) => { viewer.error = String(event.message); });
window.addEventListener("unhandledrejection", (event) => { viewer.error = String(event.reason); });

const params = new URLSearchParams(location.search);
const SIZE = Number(params.get("size") ?? 512);
const AZIMUTH = THREE.MathUtils.degToRad(Number(params.get("azimuth") ?? 0));
const ELEVATION = THREE.MathUtils.degToRad(Number(params.get("elevation") ?? 20));
const FOV = 30; // degrees, vertical: the rig's (docs/conventions.md)

let renderer = null; // made below, in the try, so that a WebGL failure lands in viewer.error

const scene = new THREE.Scene();
scene.add(new THREE.HemisphereLight(0xffffff, 0x505050, 1.0));
const sun = new THREE.DirectionalLight(0xffffff, 2.5);
scene.add(sun);
scene.add(sun.target);
const camera = new THREE.PerspectiveCamera(FOV, 1, 0.01, 100);

function vec(v) {
  return [v.x, v.y, v.z];
}

/** Camera (and key light) for a bounding sphere: the whole sphere in view from (AZIMUTH, ELEVATION). */
function place(center, radius) {
  const direction = new THREE.Vector3(
    Math.cos(ELEVATION) * Math.sin(AZIMUTH), Math.sin(ELEVATION), Math.cos(ELEVATION) * Math.cos(AZIMUTH));
  const distance = (radius / Math.sin(THREE.MathUtils.degToRad(FOV / 2))) * 1.05;
  camera.position.copy(center).addScaledVector(direction, distance);
  camera.up.set(0, 1, 0);
  camera.lookAt(center);
  camera.near = distance / 100;
  camera.far = distance * 10;
  camera.updateProjectionMatrix();
  // key light from above, front-right: grazing enough that surface detail (the normal map) shows
  sun.position.copy(center).add(new THREE.Vector3(1.0, 1.2, 0.8).multiplyScalar(distance));
  sun.target.position.copy(center);
}

function materialInfo(m) {
  const source = (t) => (t ? t.source.uuid : null);
  return {
    type: m.type,
    map: Boolean(m.map),
    normalMap: Boolean(m.normalMap),
    normalScale: m.normalScale ? [m.normalScale.x, m.normalScale.y] : null,
    roughnessMap: Boolean(m.roughnessMap),
    metalnessMap: Boolean(m.metalnessMap),
    aoMap: Boolean(m.aoMap),
    // glTF's occlusion-roughness-metallic texture: one image behind all three maps
    ormShared: Boolean(m.aoMap) && source(m.aoMap) === source(m.roughnessMap) && source(m.roughnessMap) === source(m.metalnessMap),
    roughness: m.roughness,
    metalness: m.metalness,
  };
}

async function load(url) {
  const gltf = await new GLTFLoader().loadAsync(url);
  scene.add(gltf.scene);
  gltf.scene.updateMatrixWorld(true);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const sphere = box.getBoundingSphere(new THREE.Sphere());
  let center = sphere.center;
  let radius = sphere.radius;
  if (params.has("frame")) {
    const f = params.get("frame").split(",").map(Number);
    center = new THREE.Vector3(f[0], f[1], f[2]);
    radius = f[3];
  }
  place(center, radius);
  const meshes = [];
  gltf.scene.traverse((object) => {
    if (!object.isMesh) return;
    const g = object.geometry;
    const m = object.material;
    m.userData.original = {
      map: m.map, normalMap: m.normalMap, normalScale: m.normalScale ? m.normalScale.clone() : null, aoMap: m.aoMap,
      color: m.color.clone(), vertexColors: m.vertexColors,
    };
    meshes.push({
      name: object.name,
      triangles: (g.index ? g.index.count : g.attributes.position.count) / 3,
      tangents: Boolean(g.attributes.tangent),
      material: materialInfo(m),
    });
  });
  viewer.info = {
    min: vec(box.min), max: vec(box.max), meshes, extras: gltf.scene.userData,
    frame: [...vec(center), radius],
  };
}

/**
 * Render with the normal maps on or off (or read with their green channel the wrong way: a control), the colours
 * (texture, vertex colours) on or white, the occlusion on or off.
 */
function render({ normalMap = true, flipGreen = false, albedo = true, occlusion = true } = {}) {
  scene.traverse((object) => {
    if (!object.isMesh) return;
    const m = object.material;
    const o = m.userData.original;
    m.normalMap = normalMap ? o.normalMap : null;
    if (o.normalScale) m.normalScale.set(o.normalScale.x, flipGreen ? -o.normalScale.y : o.normalScale.y);
    m.map = albedo ? o.map : null;
    m.color.copy(albedo ? o.color : new THREE.Color(1, 1, 1));
    m.vertexColors = albedo ? o.vertexColors : false;
    m.aoMap = occlusion ? o.aoMap : null;
    m.needsUpdate = true; // the shader's defines change with the maps
  });
  renderer.render(scene, camera);
  return renderer.domElement.toDataURL("image/png");
}

try {
  renderer = new THREE.WebGLRenderer({ antialias: true, alpha: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(SIZE, SIZE);
  renderer.setClearColor(0x000000, 0);
  document.body.appendChild(renderer.domElement);
  await load(params.get("model"));
  viewer.render = render;
  render();
  viewer.ready = true;
} catch (e) {
  viewer.error = String(e && e.stack ? e.stack : e);
}
