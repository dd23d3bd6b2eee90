// keyward console: progressive enhancements. Every page works as plain
// HTML forms; this adds the modal secret dialog, copy buttons, menus and
// small conveniences. Served as a file (the Content-Security-Policy allows
// no inline script).
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // Copy buttons: data-copy names the input whose value is copied.
  const announce = (text) => {
    const status = $('#copy-status');
    if (status) status.textContent = text;
  };
  document.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('[data-copy]');
    if (!btn) return;
    const source = document.getElementById(btn.dataset.copy);
    if (!source) return;
    const value = 'value' in source ? source.value : source.textContent;
    let ok = true;
    try {
      await navigator.clipboard.writeText(value);
    } catch {
      source.select?.();
      ok = document.execCommand && document.execCommand('copy');
    }
    const label = btn.dataset.label || btn.textContent;
    btn.dataset.label = label;
    btn.textContent = ok ? 'Copied ✓' : 'Press Ctrl+C';
    btn.classList.toggle('copied', ok);
    announce(ok ? 'Copied to the clipboard.' : 'Copy failed: select the text and press Ctrl+C.');
    clearTimeout(btn._reset);
    btn._reset = setTimeout(() => {
      btn.textContent = label;
      btn.classList.remove('copied');
    }, 2000);
  });

  // Read-only values select themselves, ready to copy by hand.
  $$('input[readonly].mono, textarea[readonly].mono').forEach((i) => i.addEventListener('focus', () => i.select()));

  // Invitation links are rendered relative unless console.public_url is set.
  $$('input[data-absolute-url]').forEach((i) => {
    if (i.value.startsWith('/')) i.value = location.origin + i.value;
  });

  // A page that answers a form with something shown once (an invitation
  // link) points the address bar at its plain page: a reload then shows
  // that page instead of sending the form again.
  const replaced = $('[data-replace-url]');
  if (replaced) history.replaceState(null, '', replaced.dataset.replaceUrl);

  // A select that shows a field for one of its values (expiry "On a date…").
  $$('select[data-toggles]').forEach((sel) => {
    const target = document.getElementById(sel.dataset.toggles);
    if (!target) return;
    const update = () => {
      target.hidden = sel.value !== sel.dataset.toggleValue;
    };
    sel.addEventListener('change', update);
    update();
  });

  // Forms that ask before acting.
  $$('form[data-confirm]').forEach((f) =>
    f.addEventListener('submit', (ev) => {
      if (!window.confirm(f.dataset.confirm)) ev.preventDefault();
    }),
  );

  // Revoke: the button works once the key's name is typed.
  $$('form[data-confirm-name]').forEach((f) => {
    const input = $('input[name=confirm_name]', f);
    const btn = $('button[type=submit]', f);
    if (!input || !btn) return;
    const update = () => {
      btn.disabled = input.value.trim() !== f.dataset.confirmName;
    };
    input.addEventListener('input', update);
    update();
  });

  // Menus (<details class="menu">) close on a click elsewhere or Escape.
  document.addEventListener('click', (ev) => {
    $$('details.menu[open]').forEach((d) => {
      if (!d.contains(ev.target)) d.open = false;
    });
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    $$('details.menu[open]').forEach((d) => {
      d.open = false;
      $('summary', d)?.focus();
    });
  });

  // The one-time secret dialog. Rendered open (so it shows without this
  // script); reopened here as a modal that no button, Escape or backdrop
  // click closes until the acknowledgement is ticked. Once closed, it is
  // removed from the page with the secret in it, and the address bar points
  // at the key's own page, so reloading never shows the secret again.
  const dialog = $('dialog[data-secret-dialog]');
  if (dialog) {
    const form = $('form', dialog);
    const ack = $('#secret-ack', dialog);
    const hint = $('#ack-hint', dialog);
    let acknowledged = false;
    form.noValidate = true;
    const nudge = () => {
      hint.hidden = false;
      dialog.classList.remove('shake');
      void dialog.offsetWidth; // restart the animation
      dialog.classList.add('shake');
      ack.focus();
    };
    if (dialog.open) dialog.close();
    dialog.showModal();
    $('[data-copy="secret-value"]', dialog)?.focus();
    ack.addEventListener('change', () => {
      if (ack.checked) hint.hidden = true;
    });
    dialog.addEventListener('cancel', (ev) => {
      if (!ack.checked) {
        ev.preventDefault();
        nudge();
      }
    });
    dialog.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !ack.checked) {
        ev.preventDefault();
        nudge();
      }
    });
    dialog.addEventListener('click', (ev) => {
      // Clicks on the backdrop land on the dialog element itself.
      if (ev.target === dialog && !ack.checked) nudge();
    });
    form.addEventListener('submit', (ev) => {
      if (!ack.checked) {
        ev.preventDefault();
        nudge();
        return;
      }
      acknowledged = true;
    });
    dialog.addEventListener('close', () => {
      // The close() above, which turned the rendered dialog into a modal.
      if (dialog.open) return;
      if (!acknowledged) {
        // Closed by something else (a browser close request): not allowed yet.
        dialog.showModal();
        nudge();
        return;
      }
      const next = dialog.dataset.next;
      $$('input, textarea', dialog).forEach((i) => {
        i.value = '';
      });
      dialog.remove();
      if (next) history.replaceState(null, '', next);
      $('#main')?.focus({ preventScroll: true });
    });
  }
})();
