// Golden outputs from the ORIGINAL TensorFlow.js runtime (pure-JS CPU backend).
// Usage: node make_goldens.mjs REQUESTS_JSON   (format: see README.md)
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';

const MAX_SAMPLES = 16384;
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const stripPort = (name) => name.replace(/:0$/, '');

// tf.io handler reading models/NAME.json and the weight shards its manifest names.
function localHandler(modelsDir, name) {
  const jsonBytes = readFileSync(join(modelsDir, `${name}.json`));
  const art = JSON.parse(jsonBytes.toString('utf8'));
  const shards = art.weightsManifest.flatMap((g) => g.paths).map((p) => readFileSync(join(modelsDir, p)));
  const weights = Buffer.concat(shards);
  const handler = {
    load: async () => {
      const out = {
        modelTopology: art.modelTopology,
        weightSpecs: art.weightsManifest.flatMap((g) => g.weights),
        // copy into a fresh ArrayBuffer: Buffer.concat may return a view into a shared pool
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      };
      for (const k of ['format', 'generatedBy', 'convertedBy', 'signature', 'userDefinedMetadata', 'modelInitializer']) {
        if (art[k] !== undefined) out[k] = art[k];
      }
      return out;
    },
  };
  return { handler, art, jsonSha: sha256(jsonBytes), binSha: sha256(weights) };
}

function inputNodeName(art, req) {
  if (req.input_node) return stripPort(req.input_node);
  const sigInputs = Object.values(art.signature?.inputs ?? {});
  if (sigInputs.length === 1) return stripPort(sigInputs[0].name);
  const ph = art.modelTopology.node.filter((n) => n.op === 'Placeholder');
  if (ph.length === 1) return ph[0].name;
  throw new Error(`cannot determine the input node (signature: ${sigInputs.length}, placeholders: ${ph.length}); set "input_node"`);
}

function makeInput(req) {
  const bytes = readFileSync(req.input);
  const size = req.input_shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== size) throw new Error(`${req.input}: ${bytes.length} bytes, shape ${req.input_shape} needs ${size}`);
  const ctor = { int32: Int32Array, float32: Float32Array }[req.input_dtype];
  if (!ctor) throw new Error(`unsupported input_dtype ${req.input_dtype}`);
  return { tensor: tf.tensor(ctor.from(bytes), req.input_shape, req.input_dtype), sha: sha256(bytes) };
}

async function run(model, feeds, nodes) {
  try {
    return { outs: model.execute(feeds, nodes), mode: 'execute' };
  } catch (e) {
    if (!/executeAsync/.test(String(e.message))) throw e;
    return { outs: await model.executeAsync(feeds, nodes), mode: 'executeAsync' };
  }
}

// flat values (row-major, TF order) as float32; stats over all elements in float64.
function summarize(t, offset) {
  const flat = Float32Array.from(t.dataSync());
  const size = flat.length;
  // The smallest stride that keeps at most MAX_SAMPLES values and shares no factor with the
  // last (channel) dimension, so that the samples visit every channel.
  const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
  const channels = t.shape.length ? t.shape[t.shape.length - 1] : 1;
  let stride = Math.max(1, Math.ceil(size / MAX_SAMPLES));
  while (stride > 1 && gcd(stride, channels) !== 1) stride += 1;
  const count = Math.ceil(size / stride);
  const samples = new Float32Array(count);
  for (let i = 0; i < count; i++) samples[i] = flat[i * stride];
  let sum = 0, absSum = 0, min = Infinity, max = -Infinity;
  for (const v of flat) {
    sum += v; absSum += Math.abs(v);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const meta = { shape: t.shape, dtype: t.dtype, size, stride, count, offset, sum, abs_sum: absSum, min, max };
  return { meta, bytes: Buffer.from(samples.buffer) };
}

// one top-level field / one node per line: stable, diff-friendly (numbers as JSON.stringify gives them)
function formatGolden(g) {
  const line = ([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`;
  const top = Object.entries(g).filter(([k]) => k !== 'nodes').map((e) => ` ${line(e)},\n`).join('');
  const nodes = Object.entries(g.nodes).map((e) => `  ${line(e)}`).join(',\n');
  return `{\n${top} "nodes": {\n${nodes}\n }\n}\n`;
}

async function main() {
  const reqPath = process.argv[2];
  if (!reqPath) { console.error('usage: node make_goldens.mjs REQUESTS_JSON'); process.exit(2); }
  if (endianness() !== 'LE') throw new Error('big-endian host: .golden.bin must be little-endian float32');
  const base = dirname(resolve(reqPath));
  const spec = JSON.parse(readFileSync(reqPath, 'utf8'));
  const modelsDir = join(resolve(base, spec.package_dir), 'models');
  const outDir = resolve(base, spec.out_dir);
  mkdirSync(outDir, { recursive: true });

  await tf.setBackend('cpu');
  await tf.ready();
  console.log(`tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}`);

  for (const req of spec.requests) {
    req.input = resolve(base, req.input);
    const t0 = performance.now();
    const { handler, art, jsonSha, binSha } = localHandler(modelsDir, req.model);
    const model = await tf.loadGraphModel(handler);
    const inputName = inputNodeName(art, req);
    const { tensor, sha } = makeInput(req);
    const t1 = performance.now();
    const { outs, mode } = await run(model, { [inputName]: tensor }, req.nodes);
    const t2 = performance.now();

    const golden = {
      model: req.model, tfjs_version: tf.version.tfjs, backend: tf.getBackend(),
      input_sha256: sha, model_json_sha256: jsonSha, model_bin_sha256: binSha,
      input_node: inputName, input_shape: req.input_shape, input_dtype: req.input_dtype,
      nodes: {},
    };
    const chunks = [];
    let offset = 0;
    (Array.isArray(outs) ? outs : [outs]).forEach((t, i) => {
      const { meta, bytes } = summarize(t, offset);
      golden.nodes[req.nodes[i]] = meta;
      chunks.push(bytes);
      offset += bytes.length;
      console.log(`  ${req.nodes[i]}: [${t.shape}] ${t.dtype}`);
    });
    const stem = join(outDir, `${req.output}.golden`);
    writeFileSync(`${stem}.json`, formatGolden(golden));
    writeFileSync(`${stem}.bin`, Buffer.concat(chunks));
    tf.dispose([tensor, outs]);
    model.dispose();
    console.log(`${req.model}: ${mode} via input '${inputName}', load ${((t1 - t0) / 1e3).toFixed(2)}s, run ${((t2 - t1) / 1e3).toFixed(2)}s -> ${stem}.{json,bin}`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
