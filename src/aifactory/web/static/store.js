// What the page knows, filled by the first reads and then by the live stream; panels subscribe to it.
const LOAD_POINTS = 1800;
const TRAIN_POINTS = 1200;
const EVENTS = 2000;

export const store = {
  config: null,
  state: null,
  live: false,
  liveError: "",
  load: [],
  training: [],
  validation: {},
  events: [],
  trainingLoaded: false,
  listeners: [],
  notify: () => {},
  act: async () => null,

  on(listener) { this.listeners.push(listener); },
  emit(kind) { for (const listener of this.listeners) listener(kind); },

  addLoad(points, replace = false) {
    this.load = (replace ? points : this.load.concat(points)).slice(-LOAD_POINTS);
  },

  setTraining(series, byLanguage) {
    this.training = series;
    this.validation = byLanguage;
    this.trainingLoaded = true;
  },

  addMetrics({ training = [], validation = [] }) {
    const seen = new Set(this.training.map((p) => p.step));
    for (const row of training) if (!seen.has(row.step) || row.val_loss !== null) this.training.push(row);
    this.training = this.training.slice(-TRAIN_POINTS);
    for (const row of validation) (this.validation[row.language] ||= []).push(row);
  },

  addEvents(items) {
    const known = new Set(this.events.map((e) => e.id));
    this.events = this.events.concat(items.filter((e) => !known.has(e.id))).slice(-EVENTS);
  },
};
