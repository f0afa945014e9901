// The app's live camera: each new frame of the browser's camera (requestVideoFrameCallback; every
// FALLBACK_MS where a browser lacks it) goes to the server as a JPEG (input "camera_frame") while fewer
// than IN_FLIGHT frames await their answer, so answers keep up with the camera as far as the server
// can, and a slow server is never queued up behind; the server answers with the faces it found
// ("camera_faces"), drawn as boxes over the video, and each face's label is appended to a rolling
// timeline of the last WINDOW_S seconds.
(function () {
  const FALLBACK_MS = 33, IN_FLIGHT = 2, BAR_S = 0.2, WINDOW_S = 30, WIDTH = 320;
  const COLOURS = {angry: "#d62728", disgust: "#8c564b", fear: "#9467bd", happy: "#2ca02c",
                   neutral: "#7f7f7f", sad: "#1f77b4", surprise: "#ff7f0e", contempt: "#bcbd22"};
  let on = false, timer = null, history = [], started = 0, sent = 0, starts = 0;

  function draw(message) {
    const video = document.getElementById("camera-video"), overlay = document.getElementById("camera-overlay");
    overlay.width = video.clientWidth; overlay.height = video.clientHeight;
    const ctx = overlay.getContext("2d"), scale = overlay.width / message.width;
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    ctx.lineWidth = 2; ctx.font = "14px sans-serif";
    for (const face of message.faces) {
      ctx.strokeStyle = ctx.fillStyle = COLOURS[face.label] || "lime";
      ctx.strokeRect(face.x * scale, face.y * scale, face.w * scale, face.h * scale);
      ctx.fillText("#" + face.face + " " + face.label + " " + Math.round(100 * face.p) + "%",
                   face.x * scale, Math.max(14, face.y * scale - 4));
    }
    const now = (performance.now() - started) / 1000;
    history.push({t: now, faces: message.faces});
    history = history.filter(h => now - h.t <= WINDOW_S);
    drawTimeline(now);
  }

  function drawTimeline(now) {
    const canvas = document.getElementById("camera-timeline"), ctx = canvas.getContext("2d");
    const ids = [...new Set(history.flatMap(h => h.faces.map(f => f.face)))].sort((a, b) => a - b);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const row = Math.max(14, Math.min(30, (canvas.height - 16) / Math.max(ids.length, 1)));
    ctx.font = "11px sans-serif";
    ids.forEach((id, k) => {
      ctx.fillStyle = "black"; ctx.fillText("#" + id, 2, 12 + k * row + row / 2);
      for (const h of history) {
        const face = h.faces.find(f => f.face === id);
        if (!face) continue;
        ctx.fillStyle = COLOURS[face.label] || "gray";
        const x = 30 + (canvas.width - 34) * (1 - (now - h.t) / WINDOW_S);
        ctx.fillRect(x, 4 + k * row, Math.max(2, (canvas.width - 34) * BAR_S / WINDOW_S), row - 4);
      }
    });
    canvas.dataset.updates = String((Number(canvas.dataset.updates) || 0) + 1);
  }

  function send() {
    const video = document.getElementById("camera-video");
    if (!on || sent >= IN_FLIGHT || !video.videoWidth) return;
    const grab = document.createElement("canvas");
    grab.width = WIDTH; grab.height = Math.round(WIDTH * video.videoHeight / video.videoWidth);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    sent += 1;
    Shiny.setInputValue("camera_frame", {jpeg: grab.toDataURL("image/jpeg", 0.85),
                                         t: (performance.now() - started) / 1000}, {priority: "event"});
  }

  function everyFrame(video, start) {
    if (!on || start !== starts) return;  // stopped, or started again (the newer loop sends)
    send();
    video.requestVideoFrameCallback(() => everyFrame(video, start));
  }

  async function start() {
    const status = document.getElementById("camera-status");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
      const video = document.getElementById("camera-video");
      video.srcObject = stream; await video.play();
      started = performance.now(); history = []; sent = 0; on = true; starts += 1;
      if ("requestVideoFrameCallback" in video) everyFrame(video, starts);
      else timer = setInterval(send, FALLBACK_MS);
      status.textContent = "camera on";
    } catch (error) {
      status.textContent = "no camera: " + error.message;
    }
  }

  function stop() {
    on = false; clearInterval(timer); timer = null;
    const video = document.getElementById("camera-video");
    if (video.srcObject) video.srcObject.getTracks().forEach(t => t.stop());
    video.srcObject = null;
    document.getElementById("camera-status").textContent = "camera off";
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("camera-start").addEventListener("click", start);
    document.getElementById("camera-stop").addEventListener("click", stop);
  });
  $(document).on("shiny:connected", () => {
    Shiny.addCustomMessageHandler("camera_faces", message => { sent = Math.max(0, sent - 1); draw(message); });
  });
})();
