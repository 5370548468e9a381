"use strict";
// A minimal GLB viewer in plain WebGL 1 for the GLB files fourview writes (fourview/meshio/gltf.py):
// every mesh's triangle primitives with POSITION, NORMAL, TEXCOORD_0 or COLOR_0, indices of uint16 or
// uint32, tightly packed buffer views, the material's baseColorFactor and its baseColorTexture (a PNG in
// the binary chunk, decoded by the browser). The nodes carry no transforms. Drag to orbit, wheel to zoom.

const VERTEX_SHADER = `
attribute vec3 aPos; attribute vec3 aNormal; attribute vec2 aUv; attribute vec3 aColor;
uniform mat4 uMvp;
varying vec3 vNormal; varying vec2 vUv; varying vec3 vColor;
void main() { vNormal = aNormal; vUv = aUv; vColor = aColor; gl_Position = uMvp * vec4(aPos, 1.0); }`;

const FRAGMENT_SHADER = `
precision mediump float;
uniform sampler2D uTexture; uniform float uTextured; uniform vec4 uBase; uniform vec3 uLight;
varying vec3 vNormal; varying vec2 vUv; varying vec3 vColor;
void main() {
  // Textures hold sRGB; COLOR_0 and baseColorFactor are linear (glTF): shown as sRGB, lit simply.
  vec3 albedo = uTextured > 0.5 ? texture2D(uTexture, vUv).rgb : pow(vColor, vec3(1.0 / 2.2));
  albedo *= pow(uBase.rgb, vec3(1.0 / 2.2));
  float diffuse = abs(dot(normalize(vNormal), uLight));
  gl_FragColor = vec4(albedo * (0.45 + 0.6 * diffuse), 1.0);
}`;

const GLB_MAGIC = 0x46546c67, CHUNK_JSON = 0x4e4f534a, CHUNK_BIN = 0x004e4942;
const COMPONENTS = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 };
const ARRAYS = { 5126: Float32Array, 5123: Uint16Array, 5125: Uint32Array };
const BACKGROUND = [0.93, 0.94, 0.95];

function parseGlb(buffer) {
  const data = new DataView(buffer);
  if (buffer.byteLength < 20 || data.getUint32(0, true) !== GLB_MAGIC || data.getUint32(4, true) !== 2) {
    throw new Error("not a glTF 2.0 binary file");
  }
  const jsonLength = data.getUint32(12, true);
  if (data.getUint32(16, true) !== CHUNK_JSON) throw new Error("the GLB's first chunk is not JSON");
  const json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 20, jsonLength)));
  const binStart = 20 + jsonLength;
  let bin = null;
  if (binStart + 8 <= buffer.byteLength && data.getUint32(binStart + 4, true) === CHUNK_BIN) {
    bin = { offset: binStart + 8, length: data.getUint32(binStart, true) };
  }
  return { json, bin, buffer };
}

function accessorArray(glb, index) {
  const accessor = glb.json.accessors[index];
  const view = glb.json.bufferViews[accessor.bufferView];
  const Type = ARRAYS[accessor.componentType];
  if (!Type) throw new Error("unsupported accessor component type " + accessor.componentType);
  const offset = glb.bin.offset + (view.byteOffset || 0) + (accessor.byteOffset || 0);
  return { array: new Type(glb.buffer, offset, accessor.count * COMPONENTS[accessor.type]), accessor };
}

function imageOf(glb, index) {
  const image = glb.json.images[index];
  const view = glb.json.bufferViews[image.bufferView];
  const bytes = new Uint8Array(glb.buffer, glb.bin.offset + (view.byteOffset || 0), view.byteLength);
  const url = URL.createObjectURL(new Blob([bytes], { type: image.mimeType || "image/png" }));
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
    img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("the GLB's texture could not be decoded")); };
    img.src = url;
  });
}

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), r = 1 / (near - far);
  return [f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * r, -1, 0, 0, 2 * far * near * r, 0];
}

function lookAt(eye, center) {  // world up +Y; column-major view matrix
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const norm = (v) => { const n = Math.hypot(v[0], v[1], v[2]) || 1; return [v[0] / n, v[1] / n, v[2] / n]; };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const z = norm(sub(eye, center)), x = norm(cross([0, 1, 0], z)), y = cross(z, x);
  return [x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1];
}

function multiply(a, b) {  // column-major a * b
  const out = new Array(16).fill(0);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) out[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k];
  return out;
}

class GlbViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
    this.parts = [];
    this.center = [0, 0, 0];
    this.azimuth = 0.6;
    this.elevation = 0.35;
    this.distance = 4;
    canvas.dataset.triangles = "0";
    if (!this.gl) {
      canvas.dataset.error = "WebGL is not available in this browser";
      return;
    }
    const gl = this.gl;
    this.uint32 = gl.getExtension("OES_element_index_uint");
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.attributes = {};
    for (const name of ["aPos", "aNormal", "aUv", "aColor"]) this.attributes[name] = gl.getAttribLocation(program, name);
    this.uniforms = {};
    for (const name of ["uMvp", "uTexture", "uTextured", "uBase", "uLight"]) this.uniforms[name] = gl.getUniformLocation(program, name);
    this.listen();
    this.draw();
  }

  listen() {
    let last = null;
    this.canvas.addEventListener("pointerdown", (e) => { last = [e.clientX, e.clientY]; this.canvas.setPointerCapture(e.pointerId); });
    this.canvas.addEventListener("pointerup", () => { last = null; });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      this.azimuth -= (e.clientX - last[0]) * 0.01;
      this.elevation = Math.max(-1.5, Math.min(1.5, this.elevation + (e.clientY - last[1]) * 0.01));
      last = [e.clientX, e.clientY];
      this.draw();
    });
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.distance *= Math.exp(e.deltaY * 0.001);
      this.draw();
    }, { passive: false });
  }

  clear() {
    if (!this.gl) return;
    for (const part of this.parts) {
      for (const buffer of part.buffers) this.gl.deleteBuffer(buffer);
      if (part.texture) this.gl.deleteTexture(part.texture);
    }
    this.parts = [];
    this.canvas.dataset.triangles = "0";
    this.draw();
  }

  async load(arrayBuffer) {
    if (!this.gl) throw new Error(this.canvas.dataset.error);
    this.clear();
    const gl = this.gl, glb = parseGlb(arrayBuffer);
    const low = [Infinity, Infinity, Infinity], high = [-Infinity, -Infinity, -Infinity];
    const textures = {};
    let triangles = 0;
    for (const mesh of glb.json.meshes || []) {
      for (const primitive of mesh.primitives) {
        if ((primitive.mode ?? 4) !== 4) continue;  // triangles only
        const part = { buffers: [], attributes: {}, texture: null, base: [1, 1, 1, 1] };
        for (const [name, semantic] of [["aPos", "POSITION"], ["aNormal", "NORMAL"], ["aUv", "TEXCOORD_0"], ["aColor", "COLOR_0"]]) {
          if (primitive.attributes[semantic] === undefined) continue;
          const { array, accessor } = accessorArray(glb, primitive.attributes[semantic]);
          part.attributes[name] = { buffer: this.upload(gl.ARRAY_BUFFER, array, part), size: COMPONENTS[accessor.type] };
          if (semantic === "POSITION" && accessor.min && accessor.max) {
            for (let i = 0; i < 3; i++) { low[i] = Math.min(low[i], accessor.min[i]); high[i] = Math.max(high[i], accessor.max[i]); }
          }
        }
        const { array: indices } = accessorArray(glb, primitive.indices);
        if (indices instanceof Uint32Array && !this.uint32) throw new Error("this browser cannot draw 32-bit indices");
        part.indices = this.upload(gl.ELEMENT_ARRAY_BUFFER, indices, part);
        part.count = indices.length;
        part.indexType = indices instanceof Uint32Array ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT;
        const material = (glb.json.materials || [])[primitive.material] || {};
        const pbr = material.pbrMetallicRoughness || {};
        part.base = pbr.baseColorFactor || [1, 1, 1, 1];
        if (pbr.baseColorTexture && part.attributes.aUv) {
          const source = glb.json.textures[pbr.baseColorTexture.index].source;
          textures[source] = textures[source] || this.texture(await imageOf(glb, source));
          part.texture = textures[source];
        }
        triangles += part.count / 3;
        this.parts.push(part);
      }
    }
    if (low[0] <= high[0]) {
      this.center = [0, 1, 2].map((i) => (low[i] + high[i]) / 2);
      const radius = Math.hypot(high[0] - low[0], high[1] - low[1], high[2] - low[2]) / 2 || 1;
      this.distance = (radius / Math.sin(Math.PI / 12)) * 1.05;  // fits the 30-degree field of view
    }
    this.canvas.dataset.triangles = String(triangles);
    this.draw();
    return triangles;
  }

  upload(target, array, part) {
    const gl = this.gl, buffer = gl.createBuffer();
    gl.bindBuffer(target, buffer);
    gl.bufferData(target, array, gl.STATIC_DRAW);
    part.buffers.push(buffer);
    return buffer;
  }

  texture(image) {
    const gl = this.gl, texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, image);  // glTF's UV origin is the top-left
    const powerOfTwo = (n) => (n & (n - 1)) === 0;
    if (powerOfTwo(image.width) && powerOfTwo(image.height)) {
      gl.generateMipmap(gl.TEXTURE_2D);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR_MIPMAP_LINEAR);
    } else {
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    }
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    return texture;
  }

  draw() {
    if (!this.gl || this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const gl = this.gl, canvas = this.canvas;
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (!this.parts.length) return;
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(this.program);
    const c = Math.cos(this.elevation), d = this.distance;
    const direction = [c * Math.sin(this.azimuth), Math.sin(this.elevation), c * Math.cos(this.azimuth)];
    const eye = direction.map((v, i) => this.center[i] + d * v);
    const projection = perspective(Math.PI / 6, canvas.width / canvas.height, d / 100, d * 10);
    gl.uniformMatrix4fv(this.uniforms.uMvp, false, new Float32Array(multiply(projection, lookAt(eye, this.center))));
    const light = [direction[0] + 0.3, direction[1] + 0.6, direction[2]], n = Math.hypot(...light);
    gl.uniform3f(this.uniforms.uLight, light[0] / n, light[1] / n, light[2] / n);
    for (const part of this.parts) {
      for (const [name, location] of Object.entries(this.attributes)) {
        if (location < 0) continue;
        const attribute = part.attributes[name];
        if (attribute) {
          gl.bindBuffer(gl.ARRAY_BUFFER, attribute.buffer);
          gl.enableVertexAttribArray(location);
          gl.vertexAttribPointer(location, attribute.size, gl.FLOAT, false, 0, 0);
        } else {
          gl.disableVertexAttribArray(location);
          gl.vertexAttrib3f(location, 1, 1, 1);
        }
      }
      gl.uniform4fv(this.uniforms.uBase, part.base);
      gl.uniform1f(this.uniforms.uTextured, part.texture ? 1 : 0);
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, part.texture);
      gl.uniform1i(this.uniforms.uTexture, 0);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, part.indices);
      gl.drawElements(gl.TRIANGLES, part.count, part.indexType, 0);
    }
  }
}

window.GlbViewer = GlbViewer;
