// Loads a DICOM SEG the way OHIF's viewer does and writes out what it got, for
// tests/python/test_viewer.py to compare with labels.nii.gz.
//
// OHIF (extensions/cornerstone-dicom-seg) picks the series to draw a SEG on from the SEG's
// ReferencedSeriesSequence, then hands the SEG's bytes, that series' image ids and the
// metadata registry to `adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer`
// of @cornerstonejs/adapters. This script does the same in Node: the source images are the
// DICOM files of one series, read with dcmjs, and a metadata provider answers the modules
// the adapter and Cornerstone's image loader ask for (instance, imagePlaneModule,
// generalSeriesModule, generalImageModule, imagePixelModule).
//
// Usage: node load-seg.mjs SEG_FILE OUT_DIR SERIES_FILE...
//
// Writes OUT_DIR/result.json: the stack (SOPInstanceUID of each image id, in stack order),
// the labelmap layers' shape, the warnings and errors the loader logged, and any error it
// threw; and OUT_DIR/layers.u8: every layer's voxels, [layer][stack image][row][column],
// each voxel the segment number drawn there (0 = none). Exit status 0 when the loader
// returned (result.json says whether it warned), 1 when it threw, 2 on usage errors.

import fs from 'node:fs';
import path from 'node:path';

// Cornerstone's loggers (loglevel, through dcmjs) bind console methods when their level is
// set: record warnings and errors before any of them is made.
const logged = { warnings: [], errors: [] };
const record = (list, original) => (...args) => {
  list.push(args.map(a => (a instanceof Error ? a.message : String(a))).join(' '));
  original.apply(console, args);
};
console.warn = record(logged.warnings, console.warn);
console.error = record(logged.errors, console.error);

const [segFile, outDir, ...seriesFiles] = process.argv.slice(2);
if (!segFile || !outDir || seriesFiles.length === 0) {
  console.log('usage: node load-seg.mjs SEG_FILE OUT_DIR SERIES_FILE...');
  process.exit(2);
}

const dcmjs = (await import('dcmjs')).default;
const core = await import('@cornerstonejs/core');
const { adaptersSEG } = await import('@cornerstonejs/adapters');
dcmjs.log.setLevel('warn');
core.utilities.logger.cs3dLog.setLevel('warn');

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

function readDataset(file) {
  const bytes = fs.readFileSync(file);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const message = DicomMessage.readFile(buffer);
  return { buffer, dataset: DicomMetaDictionary.naturalizeDataset(message.dict) };
}

const numbers = values => (Array.isArray(values) ? values : [values]).map(Number);

// The metadata modules of one source image, as Cornerstone's DICOM image loader derives them.
function modules(instance) {
  const iop = numbers(instance.ImageOrientationPatient);
  const [rowSpacing, columnSpacing] = numbers(instance.PixelSpacing);
  return {
    instance,
    generalSeriesModule: {
      modality: instance.Modality,
      seriesInstanceUID: instance.SeriesInstanceUID,
      seriesNumber: Number(instance.SeriesNumber),
      studyInstanceUID: instance.StudyInstanceUID,
    },
    generalImageModule: {
      sopInstanceUID: instance.SOPInstanceUID,
      instanceNumber: Number(instance.InstanceNumber),
    },
    imagePlaneModule: {
      frameOfReferenceUID: instance.FrameOfReferenceUID,
      rows: instance.Rows,
      columns: instance.Columns,
      imageOrientationPatient: iop,
      rowCosines: iop.slice(0, 3),
      columnCosines: iop.slice(3, 6),
      imagePositionPatient: numbers(instance.ImagePositionPatient),
      sliceThickness: Number(instance.SliceThickness),
      pixelSpacing: [rowSpacing, columnSpacing],
      rowPixelSpacing: rowSpacing,
      columnPixelSpacing: columnSpacing,
    },
    imagePixelModule: {
      samplesPerPixel: instance.SamplesPerPixel,
      photometricInterpretation: instance.PhotometricInterpretation,
      rows: instance.Rows,
      columns: instance.Columns,
      bitsAllocated: instance.BitsAllocated,
      bitsStored: instance.BitsStored,
      highBit: instance.HighBit,
      pixelRepresentation: instance.PixelRepresentation,
    },
  };
}

// The stack: one image id per file, sorted along the slice normal as OHIF sorts a series.
const images = seriesFiles.map((file, n) => ({
  imageId: `stochseg-test:${n}`,
  metadata: modules(readDataset(file).dataset),
}));
const normal = (() => {
  const [r0, r1, r2, c0, c1, c2] = images[0].metadata.imagePlaneModule.imageOrientationPatient;
  return [r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0];
})();
const along = image =>
  image.metadata.imagePlaneModule.imagePositionPatient.reduce((s, v, i) => s + v * normal[i], 0);
images.sort((a, b) => along(a) - along(b));
const byImageId = new Map(images.map(image => [image.imageId, image.metadata]));
core.metaData.addProvider((type, imageId) => byImageId.get(imageId)?.[type], 10000);

const imageIds = images.map(image => image.imageId);
const result = {
  stack: images.map(image => image.metadata.generalImageModule.sopInstanceUID),
  referenced_series: [],
  layers: 0,
  rows: images[0].metadata.instance.Rows,
  columns: images[0].metadata.instance.Columns,
  overlapping_segments: null,
  segments: [],
  error: null,
};
fs.mkdirSync(outDir, { recursive: true });
const seg = readDataset(segFile);
result.referenced_series = [seg.dataset.ReferencedSeriesSequence ?? []]
  .flat()
  .map(item => item.SeriesInstanceUID);

let status = 0;
try {
  const loaded = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
    imageIds,
    seg.buffer,
    { metadataProvider: core.metaData, tolerance: 0.001 }
  );
  const layers = loaded.labelMapImages;
  const sliceLength = result.rows * result.columns;
  const out = new Uint8Array(layers.length * imageIds.length * sliceLength);
  layers.forEach((layer, l) => {
    layer.forEach((image, s) => {
      const offset = (l * imageIds.length + s) * sliceLength;
      for (let i = 0; i < sliceLength; i++) {
        out[offset + i] = image.voxelManager.getAtIndex(i);
      }
    });
  });
  fs.writeFileSync(path.join(outDir, 'layers.u8'), out);
  result.layers = layers.length;
  result.overlapping_segments = loaded.overlappingSegments;
  result.segments = loaded.segMetadata.data
    .map((item, number) => item && { number, label: item.SegmentLabel })
    .filter(Boolean);
} catch (e) {
  result.error = e instanceof Error ? e.message : String(e);
  status = 1;
}
result.warnings = logged.warnings;
result.errors = logged.errors;
fs.writeFileSync(path.join(outDir, 'result.json'), JSON.stringify(result, null, 1));
process.exit(status);
