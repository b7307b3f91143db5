/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Two pages: index.html (the bank, served by the bfaf at `/` on 127.0.0.1:8080, API under
// `/api`) and explorer.html (the platform's explorer, served by the explorer process on its own
// address, e.g. 127.0.0.1:8082, API under `/api/admin`). In development the Vite server
// proxies `/api` (HTTP and the WebSockets) to one backend, e.g. the mock (`npm run mock`,
// which answers both), so the browser only ever talks to one origin; open /explorer.html
// for the explorer.
const backend = process.env.SEQUENT_BACKEND || 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    rollupOptions: {
      input: { bank: 'index.html', explorer: 'explorer.html' },
    },
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: {
      '/api': { target: backend, ws: true, changeOrigin: false },
    },
  },
  preview: {
    host: '127.0.0.1',
    port: 4173,
    proxy: {
      '/api': { target: backend, ws: true, changeOrigin: false },
    },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}', 'test/**/*.test.{ts,tsx}'],
    setupFiles: ['test/setup.ts'],
    restoreMocks: true,
  },
});
