#!/usr/bin/env node
/*
 * Checks Grafana dashboard JSON files against the dashboard schema Grafana publishes in the
 * @grafana/schema npm package.
 *
 *   node check-dashboard.js [--schemas DIR] DASHBOARD.json...
 *
 * @grafana/schema ships TypeScript types, not JSON schema files, so the JSON schemas are derived
 * from its types with ts-json-schema-generator (strict null checks, no property the type does
 * not declare):
 *   - the whole file against the Dashboard type (dist/types/raw/dashboard/x/types.gen.d.ts), the
 *     classic dashboard JSON model that Grafana imports and provisions;
 *   - each panel's "options" against the Options type of its panel plugin
 *     (raw/composable/<type>/panelcfg/x/types.gen.d.ts), and its
 *     fieldConfig.defaults.custom against that plugin's FieldConfig type, when it has one;
 *   - each field override property: "custom.<name>" against that FieldConfig's <name>, any
 *     other id against the dashboard's FieldConfig (unit, color, min, max, ...).
 * A panel type without a panelcfg schema in the package is an error: the check would otherwise
 * pass over its options unseen.
 *
 * Three structs are open in Grafana's source schema (kinds/dashboard/dashboard_kind.cue ends
 * them with "...": data sources spread their own query fields into annotations and variables)
 * but the generated TypeScript interfaces cannot say so: AnnotationQuery, AnnotationTarget and
 * VariableModel. Their declared properties are checked as declared; others are let through, as
 * Grafana does. Everything else is closed.
 *
 * Generating a schema takes a few seconds; with --schemas DIR each one is kept in DIR as
 * <name>.json and reused (the caller keys DIR on the package versions). Prints one line per
 * problem, "FILE: PATH: message", and exits 1 if there was any, 0 otherwise.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');
const { createGenerator } = require('ts-json-schema-generator');

const SCHEMA_ROOT = path.join(path.dirname(require.resolve('@grafana/schema/package.json')),
                              'dist', 'types', 'raw');
const OPEN_IN_CUE = ['AnnotationQuery', 'AnnotationTarget', 'VariableModel'];
const TSCONFIG = path.join(__dirname, 'tsconfig.json');

let schemaDir = null;
const files = [];
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--schemas')
    schemaDir = process.argv[++i];
  else
    files.push(process.argv[i]);
}
if (files.length === 0 || (schemaDir === undefined)) {
  console.error('usage: check-dashboard.js [--schemas DIR] DASHBOARD.json...');
  process.exit(2);
}

/* The JSON schema of the exported type <type> of the .d.ts file <file>, generated or cached. */
function typeSchema(file, type, name) {
  const cached = schemaDir && path.join(schemaDir, name + '.json');
  if (cached && fs.existsSync(cached))
    return JSON.parse(fs.readFileSync(cached, 'utf8'));
  const schema = createGenerator({
    path: file,
    type,
    tsconfig: TSCONFIG,
    expose: 'export',
    topRef: true,
    jsDoc: 'none',
    skipTypeCheck: true,
    additionalProperties: false,
  }).createSchema(type);
  if (cached) {
    fs.mkdirSync(schemaDir, { recursive: true });
    fs.writeFileSync(cached + '.tmp', JSON.stringify(schema));
    fs.renameSync(cached + '.tmp', cached);
  }
  return schema;
}

const ajv = new Ajv({ allErrors: true, strict: false });

function dashboardValidator() {
  const schema = typeSchema(path.join(SCHEMA_ROOT, 'dashboard', 'x', 'types.gen.d.ts'),
                            'Dashboard', 'Dashboard');
  for (const name of OPEN_IN_CUE) {
    const def = schema.definitions[name];
    if (def === undefined || def.additionalProperties !== false)
      throw new Error('@grafana/schema: no closed definition ' + name + ' to open: update OPEN_IN_CUE');
    delete def.additionalProperties;
  }
  return { schema, validate: ajv.compile(schema) };
}

/* The schemas of panel plugin <type>: { options, fieldConfig } (fieldConfig may be null), or
 * null when the package has no panelcfg for it. */
const panelSchemas = new Map();
function panelSchema(type) {
  if (panelSchemas.has(type))
    return panelSchemas.get(type);
  const file = path.join(SCHEMA_ROOT, 'composable', type, 'panelcfg', 'x', 'types.gen.d.ts');
  let result = null;
  if (/^[a-z0-9-]+$/.test(type) && fs.existsSync(file)) {
    const exported = fs.readFileSync(file, 'utf8');
    const options = typeSchema(file, 'Options', type + '.Options');
    const fieldConfig = /export interface FieldConfig\b/.test(exported)
      ? typeSchema(file, 'FieldConfig', type + '.FieldConfig')
      : null;
    result = {
      options: ajv.compile(options),
      fieldConfig: fieldConfig && { schema: fieldConfig, validate: ajv.compile(fieldConfig) },
    };
  }
  panelSchemas.set(type, result);
  return result;
}

/* A validator for the property <name> of definition <def> in <schema>, or null if it has none. */
const propertyValidators = new Map();
function propertyValidator(schema, def, name, key) {
  if (propertyValidators.has(key))
    return propertyValidators.get(key);
  const props = (schema.definitions[def] || {}).properties || {};
  const v = Object.prototype.hasOwnProperty.call(props, name)
    ? ajv.compile({ definitions: schema.definitions, ...props[name] })
    : null;
  propertyValidators.set(key, v);
  return v;
}

function topDefinition(schema) {
  return decodeURIComponent(schema.$ref.replace('#/definitions/', ''));
}

const problems = [];
function report(file, where, errors) {
  for (const e of errors) {
    const detail = e.params && e.params.additionalProperty !== undefined
      ? ' "' + e.params.additionalProperty + '"'
      : e.params && e.params.allowedValues ? ' ' + JSON.stringify(e.params.allowedValues) : '';
    problems.push(file + ': ' + (where + e.instancePath || '/') + ': ' + e.message + detail);
  }
}

const dash = dashboardValidator();
for (const file of files) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    problems.push(file + ': ' + err.message);
    continue;
  }
  if (!dash.validate(doc))
    report(file, '', dash.validate.errors);

  const panels = [];
  (doc.panels || []).forEach((p, i) => {
    panels.push(['/panels/' + i, p]);
    ((p && p.panels) || []).forEach((q, j) => panels.push(['/panels/' + i + '/panels/' + j, q]));
  });
  for (const [where, p] of panels) {
    if (p === null || typeof p !== 'object' || typeof p.type !== 'string' || p.type === 'row')
      continue; /* the Dashboard schema has said what is wrong with it */
    const label = where + ' ("' + p.title + '", ' + p.type + ')';
    const plugin = panelSchema(p.type);
    if (plugin === null) {
      problems.push(file + ': ' + label + ': @grafana/schema has no panelcfg schema for panel type "' +
                    p.type + '"');
      continue;
    }
    if (p.options !== undefined && !plugin.options(p.options))
      report(file, label + '/options', plugin.options.errors);
    const fc = p.fieldConfig || {};
    const custom = fc.defaults && fc.defaults.custom;
    if (custom !== undefined) {
      if (plugin.fieldConfig === null)
        problems.push(file + ': ' + label + '/fieldConfig/defaults/custom: panel type "' + p.type +
                      '" has no FieldConfig');
      else if (!plugin.fieldConfig.validate(custom))
        report(file, label + '/fieldConfig/defaults/custom', plugin.fieldConfig.validate.errors);
    }
    (fc.overrides || []).forEach((o, i) => {
      ((o && o.properties) || []).forEach((prop, j) => {
        if (prop === null || typeof prop !== 'object' || typeof prop.id !== 'string')
          return;
        const at = label + '/fieldConfig/overrides/' + i + '/properties/' + j;
        let v;
        if (prop.id.startsWith('custom.')) {
          const fcs = plugin.fieldConfig;
          v = fcs && propertyValidator(fcs.schema, topDefinition(fcs.schema), prop.id.slice(7),
                                       p.type + '/' + prop.id);
        } else {
          v = propertyValidator(dash.schema, 'FieldConfig', prop.id, 'dashboard/' + prop.id);
        }
        if (v === null || v === undefined)
          problems.push(file + ': ' + at + ': no field config property "' + prop.id + '" for panel type "' +
                        p.type + '"');
        else if (!v(prop.value))
          report(file, at + '/value', v.errors);
      });
    });
  }
}

for (const line of problems)
  console.log(line);
if (problems.length > 0)
  process.exit(1);
console.log('ok: ' + files.join(', ') + ' match the dashboard schema of @grafana/schema ' +
            require('@grafana/schema/package.json').version);
