// The dashboard's entry point: login, routing between the jobs and models pages, and the
// one live event stream the current (job) view follows.

import { UNAUTHORIZED_EVENT, api, forgetKey, storeKey, storedKey } from "./api.js";
import { DeploymentsView } from "./deployments_view.js";
import { JobView } from "./job_view.js";
import { JobsView } from "./jobs_view.js";
import { ModelView } from "./model_view.js";
import { ModelsView } from "./models_view.js";
import { followStream } from "./sse.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["login-view", "list-view", "job-view", "models-view", "model-view", "deployments-view"];
// Which top link is current on each page; the model pages follow no event stream.
const SECTION = {
  "list-view": "jobs",
  "job-view": "jobs",
  "models-view": "models",
  "model-view": "models",
  "deployments-view": "deployments",
};

let stream = null;
let jobView = null;
let modelView = null;
const jobsView = new JobsView();
const modelsView = new ModelsView();
const deploymentsView = new DeploymentsView();

function show(viewId) {
  for (const id of VIEWS) $(id).hidden = id !== viewId;
  const signedIn = viewId !== "login-view";
  $("logout").hidden = !signedIn;
  $("nav").hidden = !signedIn;
  $("stream-state").hidden = SECTION[viewId] !== "jobs";
  for (const section of ["jobs", "models", "deployments"]) {
    const link = $(`nav-${section}`);
    if (SECTION[viewId] === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

const STATE_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  unavailable: "live updates unavailable",
  ended: "finished",
  idle: "",
};

function setStreamState(state) {
  const badge = $("stream-state");
  badge.dataset.state = state;
  badge.textContent = STATE_TEXT[state] ?? state;
}

function stopFollowing() {
  if (stream) stream.close();
  stream = null;
  if (jobView) jobView.close();
  jobView = null;
  if (modelView) modelView.close();
  modelView = null;
  deploymentsView.close();
  setStreamState("idle");
}

function follow(path, view) {
  stream = followStream(path, {
    onMessage: (message) => view.onMessage(message),
    // A job's stream ends with the job; the all-jobs stream never should.
    resume: () => !view.finished(),
    onState: (state, { resumed }) => {
      setStreamState(state);
      // Whatever the server could not replay after a drop, a fresh read catches up on.
      if (state === "live" && resumed) view.load(null);
    },
  });
}

function route() {
  stopFollowing();
  if (!storedKey()) {
    show("login-view");
    $("api-key").focus();
    return;
  }
  const match = location.hash.match(/^#\/jobs\/([^/]+)$/);
  const model = location.hash.match(/^#\/models\/([^/]+)$/);
  if (model) {
    show("model-view");
    modelView = new ModelView(decodeURIComponent(model[1]));
    document.title = `${modelView.id} · ainfinity`;
    modelView.load();
  } else if (/^#\/deployments\/?$/.test(location.hash)) {
    show("deployments-view");
    document.title = "Deployments · ainfinity";
    deploymentsView.start();
  } else if (/^#\/models\/?$/.test(location.hash)) {
    show("models-view");
    document.title = "Models · ainfinity";
    modelsView.load(null);
  } else if (match) {
    show("job-view");
    jobView = new JobView(decodeURIComponent(match[1]));
    document.title = `${jobView.name} · ainfinity`;
    // Stream first, then read: whatever happens in between arrives on the stream.
    follow(jobView.streamPath(), jobView);
    jobView.load();
  } else {
    show("list-view");
    document.title = "ainfinity · dashboard";
    follow("/events/stream", jobsView);
    jobsView.load(null);
  }
}

async function signIn(event) {
  event.preventDefault();
  const input = $("api-key");
  const error = $("login-error");
  const key = input.value.trim();
  $("login-submit").disabled = true;
  try {
    // Checked before it is kept: a typo shows here, not as a broken page.
    await api("/jobs?limit=1", { key });
    storeKey(key);
    input.value = "";
    error.hidden = true;
    route();
  } catch (failure) {
    error.textContent =
      failure.status === 401 ? "That key was not accepted." : `Sign-in failed: ${failure.message}`;
    error.hidden = false;
  } finally {
    $("login-submit").disabled = false;
  }
}

function signOut() {
  forgetKey();
  route();
}

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
window.addEventListener(UNAUTHORIZED_EVENT, () => {
  forgetKey();
  route();
  $("login-error").textContent = "The key was rejected; sign in again.";
  $("login-error").hidden = false;
});
route();
